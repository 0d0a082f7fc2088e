"""Leader election on the in-memory store with a virtual clock."""

from __future__ import annotations

from kumo.server.leader import LeaderElector
from kumo.sim.clock import VirtualClock
from kumo.store import keys
from kumo.store.memory import MemoryStore


def test_one_leader_and_takeover_after_lease_expiry() -> None:
    clock = VirtualClock()
    store = MemoryStore(clock=clock.monotonic)
    a = LeaderElector(store, "a", ttl=5, clock=clock)
    b = LeaderElector(store, "b", ttl=5, clock=clock)
    assert a.step() and not b.step()
    assert a.current() == "a"
    for _ in range(10):  # a renews every second: b never gets in
        clock.advance(1)
        assert a.step() and not b.step()
    # a stops renewing (dies); by its own clock it stops leading before the lease expires
    clock.advance(4.1)
    assert not a.is_leader
    assert not b.step()  # the lease is still there
    clock.advance(1.0)
    assert b.step() and b.current() == "b"
    assert store.get(keys.LEADER) is not None


def test_resign_frees_the_key_at_once() -> None:
    store = MemoryStore()
    a = LeaderElector(store, "a")
    b = LeaderElector(store, "b")
    assert a.step()
    a.resign()
    assert b.step()
