"""Virtual machines: the desired spec (written by the API) and the observed status (written by
the agent of the host that runs it). Placement is a separate record, written by the scheduler."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from kumo.model.common import Frozen, Name
from kumo.model.cpu import CLUSTER_DEFAULT, CPUDef
from kumo.model.ha import HASpec
from kumo.model.migration import MigrationOverride, MigrationPolicy

CPU_MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Power(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class PlacementRules(Frozen):
    host: Name | None = None  # pin to this host
    affinity: Name | None = None  # group whose members share a host
    anti_affinity: Name | None = None  # group whose members never share a host


class Nic(Frozen):
    network: Name
    mac: str = Field(pattern=r"^52:54:00(:[0-9a-f]{2}){3}$")


BootDevice = Literal["hd", "network", "cdrom"]


class VMSpec(Frozen):
    name: Name
    uuid: str
    vcpus: int = Field(ge=1, le=256)
    # The guest's CPU: a named model, or "cluster-default": then ``cpu`` is the cluster's
    # baseline when the VM was created (None: none known then; libvirt's host-model). ADR 0007
    cpu_model: str = Field(default=CLUSTER_DEFAULT, pattern=CPU_MODEL_PATTERN)
    cpu: CPUDef | None = None
    memory_mib: int = Field(ge=16, le=4 * 1024 * 1024)
    disk_gib: int = Field(ge=1, le=65536)
    image: Name
    pool: Name
    clone: Literal["linked", "full"] = "linked"
    nics: tuple[Nic, ...]
    boot: tuple[BootDevice, ...] = ("hd",)
    ssh_keys: tuple[str, ...] = ()
    runcmd: tuple[str, ...] = ()  # cloud-init runcmd: shell commands run once, at first boot
    placement: PlacementRules = PlacementRules()
    ha: HASpec = HASpec()
    power: Power = Power.RUNNING
    reboot_generation: int = 0  # bumped by `vm reboot`; the agent reboots until it catches up
    reboot_mode: Literal["acpi", "reset"] = "acpi"
    stop_timeout_s: int = Field(default=60, ge=0, le=3600)  # ACPI, then force
    stop_mode: Literal["acpi", "force"] = "acpi"  # set by each `vm stop`; force: at once
    migration: MigrationOverride | None = None  # this VM's changes to the cluster's policy
    deleting: bool = False
    task: str | None = None  # the operation in progress; the agent finishes it
    created_at: float


class VMState(StrEnum):
    DEFINING = "defining"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    PAUSED = "paused"
    CRASHED = "crashed"
    DELETING = "deleting"
    ERROR = "error"
    # Shown by the API, never reported: the VM's host is down, so its last report is stale.
    UNKNOWN = "unknown"
    # Shown by the API, never reported: HA is running it again elsewhere (``/kumo/ha/<vm>``),
    # or its host is fenced and HA has yet to place it.
    RECOVERING = "recovering"


class VMStatus(Frozen):
    name: Name
    host: Name
    state: VMState
    reboot_generation: int = 0
    message: str = ""
    # The revision of the placement under which the agent's start of the VM failed (0: no
    # failed start). An HA VM is not started again under that placement: the leader decides
    # (kumo.server.ha: it places the VM again, on this host to retry or on another one).
    start_failed: int = 0
    updated_at: float


class Placement(Frozen):
    host: Name
    at: float


class MigrationState(StrEnum):
    QUEUED = "queued"  # waiting for the cluster's migration limits
    RUNNING = "running"  # the source host's agent drives it


class Migration(Frozen):
    """A migration asked for: queued until the cluster's limits let it run, then driven by
    the source host's agent, which removes the record when it ends."""

    vm: Name
    task: str
    source: Name
    target: Name
    mode: Literal["live", "cold"] = "live"  # cold: a stopped VM changes host
    copy_storage: bool = False  # the disk is host-local: copied to the target as it moves
    state: MigrationState = MigrationState.RUNNING
    policy: MigrationPolicy = MigrationPolicy()  # effective: cluster, VM, this request
    cancel: bool = False  # set by `kumo task cancel`; the source agent aborts the job
    started_at: float
