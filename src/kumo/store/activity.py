"""Events and tasks in the store: append an event, create and finish tasks."""

from __future__ import annotations

import os
import time
import uuid

from kumo.model.activity import Event, MigrationProgress, Task, TaskState
from kumo.store import keys
from kumo.store.base import ClusterStore, Compare, Put
from kumo.store.records import decode, encode, put


def event_key(at: float) -> str:
    # Sortable by time; the random tail keeps two writers from colliding.
    return f"{keys.EVENTS}{int(at * 1e9):020d}-{os.urandom(3).hex()}"


def event_op(actor: str, obj: str, action: str, message: str, at: float | None = None) -> Put:
    """An event as a Put, to commit together with the change it records."""
    at = time.time() if at is None else at
    return put(
        event_key(at), Event(time=at, actor=actor, object=obj, action=action, message=message)
    )


def new_task(kind: str, target: str, actor: str, now: float | None = None) -> Task:
    now = time.time() if now is None else now
    return Task(
        id=uuid.uuid4().hex[:12],
        kind=kind,
        target=target,
        actor=actor,
        created_at=now,
        updated_at=now,
    )


def finish_task(
    store: ClusterStore,
    task_id: str,
    state: TaskState,
    message: str = "",
    progress: float | None = None,
    migration: MigrationProgress | None = None,
) -> bool:
    """Move a task to ``state`` (a final one, or RUNNING with progress) unless it is already
    done; True when it changed."""
    key = keys.TASKS + task_id
    for _ in range(5):
        entry = store.get(key)
        if entry is None:
            return False
        task = decode(Task, entry)
        if task.state.done:
            return False
        update: dict[str, object] = {"state": state, "message": message, "updated_at": time.time()}
        if state == TaskState.SUCCEEDED:
            update["progress"] = 1.0
        elif progress is not None:
            update["progress"] = progress
        if migration is not None:
            update["migration"] = migration
        changed = task.model_copy(update=update)
        if changed == task.model_copy(update={"updated_at": update["updated_at"]}):
            return False
        if store.commit([Compare(key, entry.mod_revision)], [Put(key, encode(changed))]):
            return True
    return False
