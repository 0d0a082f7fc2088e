"""The leader's controllers: one reconciler per concern, run in a fixed order, each again
when its requeue time is due; the leader's fence is read once a pass; the event log stays
bounded, oldest events go first, in transactions that etcd accepts."""

from __future__ import annotations

from collections.abc import Sequence

from kumo.model.activity import Event
from kumo.server.controllers import Controllers, EventTrimmer
from kumo.server.service import ClusterService
from kumo.store import keys
from kumo.store.activity import event_op
from kumo.store.base import Compare, Delete, Put
from kumo.store.lease import Fence
from kumo.store.memory import MemoryStore
from kumo.store.records import decode

ETCD_MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


class CountingStore(MemoryStore):
    """Records the size of every transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.txn_sizes: list[int] = []

    def commit(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> int | None:
        self.txn_sizes.append(len(ops))
        return super().commit(compares, ops)


def add_events(store: MemoryStore, first: int, count: int) -> None:
    """Events e<first> .. e<first + count - 1>, one a second."""
    n = range(first, first + count)
    ops = [event_op("test", "vm/web1", "note", f"e{i}", at=1000.0 + i) for i in n]
    for i in range(0, count, 100):
        store.commit([], ops[i : i + 100])


def messages(store: MemoryStore) -> list[str]:
    return [decode(Event, e).message for e in store.range(keys.EVENTS)]


def test_the_event_log_is_trimmed_to_the_newest_events() -> None:
    store = CountingStore()
    add_events(store, 0, 250)
    controllers = Controllers(ClusterService(store), max_events=20)
    store.txn_sizes.clear()
    controllers.run_once()
    assert messages(store) == [f"e{i}" for i in range(230, 250)]
    deletes = [n for n in store.txn_sizes if n]
    assert sum(deletes) == 230 and max(deletes) <= ETCD_MAX_TXN_OPS


def test_a_log_within_the_limit_is_left_alone() -> None:
    store = MemoryStore()
    add_events(store, 0, 20)
    Controllers(ClusterService(store), max_events=20).run_once()
    assert len(messages(store)) == 20


def test_trimming_runs_on_the_first_pass_and_then_every_nth() -> None:
    store = MemoryStore()
    add_events(store, 0, 10)
    controllers = Controllers(ClusterService(store), trim_every=3, max_events=5)
    controllers.run_once()  # pass 1 trims
    assert len(messages(store)) == 5
    add_events(store, 10, 10)
    controllers.run_once()
    controllers.run_once()
    assert len(messages(store)) == 15  # passes 2 and 3 do not
    controllers.run_once()  # pass 4 does
    assert messages(store) == [f"e{i}" for i in range(15, 20)]


def test_trim_every_pass() -> None:
    store = MemoryStore()
    controllers = Controllers(ClusterService(store), trim_every=1, max_events=5)
    for n in range(3):
        add_events(store, 10 * n, 10)
        controllers.run_once()
        assert len(messages(store)) == 5


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return 1000.0 + self.t

    def monotonic(self) -> float:
        return self.t


class Recorder:
    """A reconciler that notes each run and asks to run again after ``after`` seconds."""

    def __init__(self, name: str, runs: list[tuple[str, float]], after: float | None) -> None:
        self.name, self.runs, self.after = name, runs, after

    def reconcile(self, now: float) -> float | None:
        self.runs.append((self.name, now))
        return self.after


def test_reconcilers_run_in_a_fixed_order() -> None:
    controllers = Controllers(ClusterService(MemoryStore()))
    names = [r.name for r in controllers.reconcilers]
    assert names == ["ha", "netpaths", "scheduler", "maintenance", "migrations", "events"]


def test_a_reconciler_runs_again_once_its_requeue_time_is_due() -> None:
    clock = Clock()
    controllers = Controllers(ClusterService(MemoryStore(), clock=clock))
    runs: list[tuple[str, float]] = []
    controllers.reconcilers = (Recorder("every", runs, None), Recorder("later", runs, 10.0))
    controllers.run_once()
    clock.t += 9.5
    controllers.run_once()  # "later" is not due yet
    clock.t += 0.5
    controllers.run_once()  # now it is
    assert runs == [
        ("every", 100.0),
        ("later", 100.0),
        ("every", 109.5),
        ("every", 110.0),
        ("later", 110.0),
    ]


def test_the_fence_is_read_once_a_pass_and_given_to_every_reconciler() -> None:
    fences = [Fence(f"leader {i}") for i in range(2)]
    read: list[Fence] = []

    def fence() -> Fence:
        read.append(fences[len(read)])
        return read[-1]

    controllers = Controllers(ClusterService(MemoryStore()), fence=fence)
    trimmer = controllers.reconcilers[-1]
    assert isinstance(trimmer, EventTrimmer)
    seen = []
    for _ in fences:
        controllers.run_once()
        seen.append([r.fence() for r in controllers.reconcilers])  # type: ignore[attr-defined]
    assert read == fences
    n = len(controllers.reconcilers)
    assert seen == [[fences[0]] * n, [fences[1]] * n]
