"""Simulated hosts and the first objects of a cluster, written as an agent and an operator
would write them (for tests, benchmarks and ``kumo.sim.World``; no server module needed)."""

from __future__ import annotations

import uuid
from typing import Protocol

from kumo.clock import SYSTEM_CLOCK, Clock, Ids
from kumo.model.host import HostRecord, Image, Network, Pool
from kumo.model.vm import Nic, VMSpec
from kumo.store import keys
from kumo.store.activity import event_op
from kumo.store.base import ClusterStore, Compare
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


class Operator(Protocol):
    """Who writes the basics: a ``ClusterService`` (its store, clock and ids) will do."""

    @property
    def store(self) -> ClusterStore: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def ids(self) -> Ids: ...


ROUTER = "198.18.0.1"  # the public network's gateway, as in the lab
NAS = "198.18.1.10"  # the shared pool's NAS on the storage network


def define_basics(service: Operator, image: str = "img") -> None:
    """The shared pool, the public network and one image, each with its ``created`` event,
    as the API's commands write them (stamped by the service's clock and ids)."""
    now = service.clock.now()
    for key, model, kind in (
        (
            keys.POOLS + "shared",
            Pool(name="shared", kind="shared-dir", path="/pool", nas=(NAS,)),
            "pool",
        ),
        (
            keys.NETWORKS + "public",
            Network(name="public", bridge="br0", cidr="198.18.0.0/24", gateway=ROUTER),
            "network",
        ),
        (
            keys.IMAGES + image,
            Image(name=image, pool="shared", path=f"{image}.qcow2", size_gib=1, created_at=now),
            "image",
        ),
    ):
        event = event_op("sim", f"{kind}/{model.name}", "created", "", now, ids=service.ids)
        if service.store.commit([Compare(key, 0)], [put(key, model), event]) is None:
            raise ValueError(f"{kind} {model.name} already exists")


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
