"""Hypervisor hosts, as their agents register them, and the resources they offer."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

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


class Pool(Frozen):
    name: Name
    kind: Literal["shared-dir", "local-dir"]
    path: str = Field(pattern=r"^/[^\x00]*$")


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
