"""Time and identity are injected: tasks and events made with a fixed clock and counted ids
are the same bytes on every run, and the system sources give real time and fresh ids."""

from __future__ import annotations

from kumo.clock import SYSTEM_CLOCK, SYSTEM_IDS, CountedIds
from kumo.model.activity import TaskState
from kumo.server.service import ClusterService
from kumo.sim.cluster import define_basics, sim_host
from kumo.store import keys
from kumo.store.activity import event_op, finish_task, new_task
from kumo.store.memory import MemoryStore
from kumo.store.records import put


class FixedClock:
    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at

    def monotonic(self) -> float:
        return self.at - 1000.0


def one_run() -> list[tuple[str, bytes]]:
    """A task created, an event about it and the task finished, as stored."""
    clock, ids = FixedClock(1000.5), CountedIds("t")
    store = MemoryStore(clock.monotonic)
    task = new_task("vm.create", "vm/web1", "test", clock=clock, ids=ids)
    event = event_op("test", "vm/web1", "created", task.id, clock=clock, ids=ids)
    store.commit([], [put(keys.TASKS + task.id, task), event])
    clock.at = 1002.25
    assert finish_task(store, task.id, TaskState.SUCCEEDED, "done", clock=clock)
    return [(e.key, e.value) for e in store.range(keys.ROOT)]


def test_a_task_and_an_event_replay_byte_for_byte() -> None:
    first, second = one_run(), one_run()
    assert first == second
    assert [k for k, _ in first] == [
        f"{keys.EVENTS}{1000_500_000_000:020d}-t000002",
        f"{keys.TASKS}t000001",
    ]
    event, task = (v.decode() for _, v in first)
    assert '"time":1000.5' in event and '"message":"t000001"' in event
    assert '"created_at":1000.5' in task and '"updated_at":1002.25' in task


def test_the_system_sources_give_the_time_and_fresh_ids() -> None:
    before = SYSTEM_CLOCK.now()
    task = new_task("vm.create", "vm/web1", "test")
    assert before <= task.created_at <= SYSTEM_CLOCK.now()
    a, b = SYSTEM_IDS.new_id(), SYSTEM_IDS.new_id()
    assert a != b and len(a) == 12 and int(a, 16) >= 0
    assert SYSTEM_CLOCK.monotonic() <= SYSTEM_CLOCK.monotonic()


def test_a_sim_host_is_registered_at_its_clocks_time() -> None:
    assert sim_host("h1", clock=FixedClock(7.0)).registered_at == 7.0


def service_run() -> list[tuple[str, bytes]]:
    store = MemoryStore()
    svc = ClusterService(store, clock=FixedClock(5.0), ids=CountedIds("s"))
    define_basics(svc)
    return [(e.key, e.value) for e in store.range(keys.EVENTS)]


def test_the_service_stamps_events_with_its_clock_and_ids() -> None:
    first = service_run()
    assert first == service_run()
    assert [k for k, _ in first] == [
        f"{keys.EVENTS}{5_000_000_000:020d}-s00000{i}" for i in (1, 2, 3)
    ]
