"""Tasks (every operation someone asked for, with progress and result) and events (every
state change and action, with time, actor and object)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from kumo.model.common import Frozen


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


class Task(Frozen):
    id: str
    kind: str  # vm.create, vm.start, vm.stop, vm.reboot, vm.delete, image.import, ...
    target: str  # the object, e.g. "vm/web1"
    state: TaskState = TaskState.QUEUED
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    message: str = ""
    actor: str
    created_at: float
    updated_at: float


class Event(Frozen):
    time: float
    actor: str  # "api:admin", "agent:h1", "controller:scheduler"
    object: str  # "vm/web1", "host/h2"
    action: str  # "placed", "started", "state", ...
    message: str
