"""Simulated hosts and the first objects of a cluster, written as an agent and an operator
would write them."""

from __future__ import annotations

import uuid

from kumo.clock import SYSTEM_CLOCK, Clock
from kumo.model.host import HostRecord
from kumo.model.vm import Nic, VMSpec
from kumo.server.schemas import ImageImport, NetworkCreate, PoolCreate
from kumo.server.service import ClusterService
from kumo.store import keys
from kumo.store.base import ClusterStore
from kumo.store.records import put


def sim_host(
    name: str, cpus: int = 8, memory_mib: int = 16384, *, clock: Clock = SYSTEM_CLOCK
) -> HostRecord:
    """A host's record as its agent registers it, at ``clock.now()``."""
    return HostRecord(
        name=name,
        address="127.0.0.1",
        cpus=cpus,
        memory_mib=memory_mib,
        libvirt_version="9.0.0",
        qemu_version="7.2.0",
        domain_type="qemu",
        pools=("shared",),
        networks=("public",),
        agent_port=1,
        registered_at=clock.now(),
    )


def register_hosts(store: ClusterStore, hosts: list[HostRecord], ttl: int = 60) -> int:
    """Register ``hosts`` as up (their liveness keys under one lease, returned: keep it
    alive for runs longer than ``ttl``)."""
    lease = store.grant(ttl)
    for rec in hosts:
        store.commit([], [put(keys.HOSTS + rec.name, rec), put(keys.ALIVE + rec.name, rec, lease)])
    return lease


def define_basics(service: ClusterService, image: str = "img") -> None:
    """The shared pool, the public network and one image."""
    service.create_pool(PoolCreate(name="shared", path="/pool"), "sim")
    service.create_network(NetworkCreate(name="public", bridge="br0"), "sim")
    service.import_image(ImageImport(name=image, pool="shared", path=f"{image}.qcow2"), "sim")


def vm_spec(name: str, **changes: object) -> VMSpec:
    """A VM spec as the API would store it (1 vCPU, 128 MiB, image ``img`` in ``shared``,
    one NIC on ``public``), with ``changes`` applied."""
    fields: dict[str, object] = {
        "name": name,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.vm.kumo")),
        "vcpus": 1,
        "memory_mib": 128,
        "disk_gib": 1,
        "image": "img",
        "pool": "shared",
        "nics": (Nic(network="public", mac="52:54:00:00:00:01"),),
        "created_at": 0.0,
    }
    fields.update(changes)
    return VMSpec.model_validate(fields)
