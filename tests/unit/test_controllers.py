"""The leader's controllers: the event log stays bounded, oldest events go first, in
transactions that etcd accepts."""

from __future__ import annotations

from collections.abc import Sequence

from kumo.model.activity import Event
from kumo.server.controllers import Controllers
from kumo.server.service import ClusterService
from kumo.store import keys
from kumo.store.activity import event_op
from kumo.store.base import Compare, Delete, Put
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
