"""Tasks (every operation someone asked for, with progress and result) and events (every
state change and action, with time, actor and object)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from kumo.model.common import Frozen
from kumo.model.migration import Strategy


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


class MigrationProgress(Frozen):
    """libvirt's job statistics of a running migration, as the task shows them."""

    bytes_total: int = 0
    bytes_processed: int = 0
    bytes_remaining: int = 0
    bandwidth_mib_s: float = 0.0
    dirty_rate_pages_s: float = 0.0
    iteration: int = 0
    expected_downtime_ms: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    downtime_ms: float | None = None  # when done: the real downtime
    throttle_pct: int = 0  # vCPU time auto-converge takes from the guest now
    downtime_target_ms: int = 0  # the switch-over pause allowed now (raised on stalls)
    xbzrle_cache_misses: int | None = None  # pages not found in the xbzrle cache, so far
    postcopy: bool = False  # switched to post-copy
    disk_bytes_total: int = 0  # storage copy of a host-local disk (before the memory)
    disk_bytes_processed: int = 0
    strategy: Strategy | None = None


class Task(Frozen):
    id: str
    kind: str  # vm.create, vm.start, vm.stop, vm.reboot, vm.delete, image.import, ...
    target: str  # the object, e.g. "vm/web1"
    state: TaskState = TaskState.QUEUED
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    message: str = ""
    actor: str
    # why it was asked, when kumo asked it itself ("public path of h2 down since …")
    reason: str = ""
    created_at: float
    updated_at: float
    migration: MigrationProgress | None = None


class Event(Frozen):
    time: float
    actor: str  # "api:admin", "agent:h1", "controller:scheduler"
    object: str  # "vm/web1", "host/h2"
    action: str  # "placed", "started", "state", ...
    message: str
