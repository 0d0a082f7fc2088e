"""Events and tasks in the store: append an event, create and finish tasks.

Times come from a ``Clock`` and ids from an ``Ids`` (``kumo.clock``); the system ones are the
defaults, and a caller that passes a fixed clock and counted ids gets the same records, byte
for byte, on every run (tests/unit/test_clock.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from kumo.clock import SYSTEM_CLOCK, SYSTEM_IDS, Clock, Ids
from kumo.model.activity import Event, MigrationProgress, Task, TaskState
from kumo.store import keys
from kumo.store.base import ClusterStore, Compare, Put
from kumo.store.records import decode, encode, put


def event_key(at: float, ids: Ids = SYSTEM_IDS) -> str:
    # Sortable by time; the id tail keeps two writers from colliding.
    return f"{keys.EVENTS}{int(at * 1e9):020d}-{ids.new_id()}"


def event_op(
    actor: str,
    obj: str,
    action: str,
    message: str,
    at: float | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    ids: Ids = SYSTEM_IDS,
) -> Put:
    """An event as a Put, to commit together with the change it records; ``at`` defaults to
    ``clock.now()``."""
    at = clock.now() if at is None else at
    return put(
        event_key(at, ids), Event(time=at, actor=actor, object=obj, action=action, message=message)
    )


def new_task(
    kind: str,
    target: str,
    actor: str,
    now: float | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    ids: Ids = SYSTEM_IDS,
) -> Task:
    """A queued task with a fresh id; ``now`` defaults to ``clock.now()``."""
    now = clock.now() if now is None else now
    return Task(
        id=ids.new_id(),
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
    *,
    clock: Clock = SYSTEM_CLOCK,
    fence: Sequence[Compare] = (),
) -> bool:
    """Move a task to ``state`` (a final one, or RUNNING with progress) unless it is already
    done; True when it changed. ``fence``: the writer's fencing compares (kumo.store.lease),
    part of every try."""
    key = keys.TASKS + task_id
    for _ in range(5):
        entry = store.get(key)
        if entry is None:
            return False
        task = decode(Task, entry)
        if task.state.done:
            return False
        update: dict[str, object] = {"state": state, "message": message, "updated_at": clock.now()}
        if state == TaskState.SUCCEEDED:
            update["progress"] = 1.0
        elif progress is not None:
            update["progress"] = progress
        if migration is not None:
            update["migration"] = migration
        changed = task.model_copy(update=update)
        if changed == task.model_copy(update={"updated_at": update["updated_at"]}):
            return False
        if store.commit([*fence, Compare(key, entry.mod_revision)], [Put(key, encode(changed))]):
            return True
    return False
