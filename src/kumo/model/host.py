"""Hypervisor hosts, as their agents register them, and the resources they offer."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kumo.model.common import Frozen, Name
from kumo.model.cpu import CPUDef


class HostRecord(Frozen):
    """Written by the host's agent at start; ``schedulable`` is the operator's."""

    name: Name
    address: str  # storage (cluster) network: agent endpoint, migrations
    cpus: int = Field(ge=1)
    memory_mib: int = Field(ge=1)
    libvirt_version: str
    qemu_version: str
    domain_type: Literal["kvm", "qemu"]
    cpu_models: tuple[str, ...] = ()  # guest CPU models usable here; () = not known
    cpu: CPUDef | None = None  # the hypervisor's host-model CPU, features expanded; None: unknown
    postcopy: bool = False  # post-copy works here: userfaultfd, and not TCG (ADR 0006)
    # xbzrle and compression are safe for migrations here: KVM guests only; under TCG, QEMU
    # 7.2 corrupted guest memory with them, and with post-copy (ADR 0006)
    page_encoding: bool = False
    pools: tuple[Name, ...] = ()
    networks: tuple[Name, ...] = ()
    schedulable: bool = True
    agent_port: int
    registered_at: float


class HostState(StrEnum):
    UP = "up"
    DOWN = "down"  # no live agent lease
    FENCED = "fenced"  # no live agent lease, and known off (``/kumo/fenced/<host>``)
    # up, but a network path is down while most other hosts have it (``/kumo/degraded/``):
    # unschedulable; its HA VMs are moved away when the lost path is the public one
    DEGRADED = "degraded"


class NetPath(StrEnum):
    PUBLIC = "public"  # the guests' network: its router (Network.gateway)
    STORAGE = "storage"  # the cluster network: the NAS (Pool.nas), etcd, migrations


class PathState(StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"  # no target to ping, or not judged yet since the agent started


class PathStatus(Frozen):
    state: PathState = PathState.UNKNOWN
    targets: tuple[str, ...] = ()  # the addresses pinged
    since: float = 0.0  # wall clock: when the agent judged the path to be in this state
    detail: str = ""  # what was last seen, e.g. "198.18.0.1: 3 pings unanswered"


class HostPaths(Frozen):
    """``/kumo/paths/<host>``: the host's network paths as its agent sees them (bound to the
    agent's lease: a dead host reports nothing)."""

    host: Name
    public: PathStatus = PathStatus()
    storage: PathStatus = PathStatus()
    at: float = 0.0

    def path(self, net: NetPath) -> PathStatus:
        return self.public if net == NetPath.PUBLIC else self.storage


class Degraded(Frozen):
    """``/kumo/degraded/<host>``: the leader found a path of the host down while most other
    up hosts have it. Removed as soon as that no longer holds (the path back, or lost by
    most hosts, or no longer judged); failback then waits for the stabilisation period."""

    host: Name
    path: NetPath
    since: float  # when the agent saw the path go down (wall clock)
    reason: str
    at: float  # when the leader marked the host


class Pool(Frozen):
    name: Name
    kind: Literal["shared-dir", "local-dir"]
    path: str = Field(pattern=r"^/[^\x00]*$")
    # the NAS's addresses on the storage network: each host's agent pings them (its storage
    # path, agent/paths.py); () = the storage path is not monitored
    nas: tuple[str, ...] = ()
    # "ADDRESS:PORT" of an NBD server that exports the files of the pool's vms/ directory
    # under their names (e.g. ``nbdkit file dir=<pool>/vms``): the VMs' disks are then raw
    # full copies, and QEMU opens them over the storage network with its own NBD client,
    # so a NAS outage reaches the guests (paused on I/O error) as on a real NAS. None: QEMU
    # opens the files in the mounted directory.
    nbd: str | None = None

    @field_validator("nas")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for a in value:
            ipaddress.ip_address(a)  # ValueError names the address
        return value

    @field_validator("nbd")
    @classmethod
    def _nbd(cls, value: str | None) -> str | None:
        if value is not None:
            nbd_server(value)
        return value

    @model_validator(mode="after")
    def _nbd_shared(self) -> Pool:
        if self.nbd is not None and self.kind != "shared-dir":
            raise ValueError("nbd: only a shared-dir pool can be exported over NBD")
        return self


def nbd_server(value: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (an IPv4 address, a port 1-65535) as a pair; ValueError says why."""
    address, sep, port = value.rpartition(":")
    try:
        ipaddress.IPv4Address(address)
        number = int(port)
    except ValueError:
        number = 0
    if not sep or not 0 < number < 65536:
        raise ValueError(
            f"{value!r} is not an NBD server: use ADDRESS:PORT, e.g. 198.18.1.10:10809"
        )
    return address, number


class PoolIdentity(Frozen):
    """A shared pool's random id: recorded by the first agent that saw the pool, and written
    in the pool's directory, where every other host must find it (storage/pool_identity.py)."""

    pool: Name
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    recorded_by: Name
    at: float


class Network(Frozen):
    name: Name
    kind: Literal["bridge"] = "bridge"
    bridge: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    cidr: str | None = None  # the network's subnet, e.g. 198.18.0.0/24
    # its router: each host's agent pings it (its public path, agent/paths.py); inside cidr
    gateway: str | None = None

    @model_validator(mode="after")
    def _gateway_inside(self) -> Network:
        net = ipaddress.ip_network(self.cidr, strict=False) if self.cidr else None
        if self.gateway is not None:
            gw = ipaddress.ip_address(self.gateway)
            if net is None:
                raise ValueError("gateway needs the network's cidr")
            if gw not in net:
                raise ValueError(f"gateway {gw} is outside the network's cidr {net}")
        return self


class Image(Frozen):
    name: Name
    pool: Name
    path: str = Field(pattern=r"^[^/\x00][^\x00]*$")  # inside the pool
    format: Literal["qcow2", "raw"] = "qcow2"
    size_gib: int = Field(ge=1)  # virtual size, rounded up
    created_at: float


class MaintenanceState(StrEnum):
    DRAINING = "draining"  # unschedulable; its running VMs are being moved away
    MAINTENANCE = "maintenance"  # unschedulable and empty of running VMs


class Maintenance(Frozen):
    """An operator took the host out of service (`kumo host maintenance enter`)."""

    host: Name
    state: MaintenanceState = MaintenanceState.DRAINING
    task: str
    evacuated: tuple[Name, ...] = ()  # VMs moved away, to bring back on exit (fail-back)
    message: str = ""
    since: float
