"""The ClusterStore contract, run against the in-memory store and a real etcd."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from kumo.store import ClusterStore, Compare, Delete, LeaseExpired, Put, StoreUnavailable
from kumo.store.base import WatchEvent
from kumo.store.etcd import EtcdStore
from kumo.store.memory import MemoryStore

_ns = itertools.count()


@dataclass
class Subject:
    store: ClusterStore
    prefix: str  # each test works under its own prefix (etcd is shared by the session)
    advance: Callable[[float], None]  # let this much time pass for leases


@pytest.fixture(params=["memory", "etcd"])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    prefix = f"/contract/{next(_ns)}-{time.time_ns()}/"
    if request.param == "memory":
        now = [0.0]

        def tick(s: float) -> None:
            now[0] += s

        store = MemoryStore(clock=lambda: now[0])
        yield Subject(store, prefix, tick)
        store.close()
    else:
        endpoint = request.getfixturevalue("etcd_endpoint")
        etcd = EtcdStore(endpoint)
        yield Subject(etcd, prefix, time.sleep)
        etcd.close()


def test_put_get_range_sorted_and_prefix_scoped(subject: Subject) -> None:
    s, p = subject.store, subject.prefix
    for k in ("b", "a", "c"):
        assert s.commit([], [Put(p + k, k.encode())]) is not None
    s.commit([], [Put(p[:-1] + "x/other", b"z")])
    entries = s.range(p)
    assert [e.key for e in entries] == [p + "a", p + "b", p + "c"]
    got = s.get(p + "b")
    assert got is not None and got.value == b"b"
    assert s.get(p + "missing") is None


def test_each_commit_advances_revision_by_one(subject: Subject) -> None:
    s, p = subject.store, subject.prefix
    r0 = s.revision()
    r1 = s.commit([], [Put(p + "x", b"1"), Put(p + "y", b"2")])
    assert r1 == r0 + 1 == s.revision()
    x = s.get(p + "x")
    assert x is not None and x.mod_revision == r1 and x.create_revision == r1
    r2 = s.commit([], [Put(p + "x", b"3")])
    x2 = s.get(p + "x")
    assert r2 == r1 + 1 and x2 is not None and x2.create_revision == r1 and x2.mod_revision == r2


def test_compare_zero_means_absent_so_create_happens_once(subject: Subject) -> None:
    s, p = subject.store, subject.prefix
    assert s.commit([Compare(p + "vm", 0)], [Put(p + "vm", b"first")]) is not None
    assert s.commit([Compare(p + "vm", 0)], [Put(p + "vm", b"second")]) is None
    got = s.get(p + "vm")
    assert got is not None and got.value == b"first"


def test_failed_compare_applies_nothing(subject: Subject) -> None:
    s, p = subject.store, subject.prefix
    rev = s.commit([], [Put(p + "a", b"1")])
    assert rev is not None
    stale = rev - 1
    r_before = s.revision()
    assert s.commit([Compare(p + "a", stale)], [Put(p + "a", b"2"), Put(p + "b", b"2")]) is None
    assert s.revision() == r_before
    a = s.get(p + "a")
    assert a is not None and a.value == b"1" and s.get(p + "b") is None
    assert s.commit([Compare(p + "a", rev)], [Delete(p + "a"), Put(p + "b", b"2")]) is not None
    assert s.get(p + "a") is None and s.get(p + "b") is not None


def test_lease_keys_vanish_on_revoke_and_expiry(subject: Subject) -> None:
    s, p = subject.store, subject.prefix
    lease = s.grant(2)
    s.commit([], [Put(p + "alive/h1", b"up", lease)])
    held = s.get(p + "alive/h1")
    assert held is not None and held.lease == lease
    s.revoke(lease)
    assert s.get(p + "alive/h1") is None

    lease2 = s.grant(2)
    s.commit([], [Put(p + "alive/h2", b"up", lease2)])
    subject.advance(1.0)
    s.keepalive(lease2)  # renewed to a full TTL again
    subject.advance(1.2)
    assert s.get(p + "alive/h2") is not None
    subject.advance(3.5)
    assert s.get(p + "alive/h2") is None
    with pytest.raises(LeaseExpired):
        s.keepalive(lease2)
    with pytest.raises(LeaseExpired):
        s.commit([], [Put(p + "alive/h3", b"up", lease2)])


def test_a_leased_keys_revision_fences_writes(subject: Subject) -> None:
    """The fencing token (kumo.store.lease): a write comparing a leased key's revision is
    refused once the lease is gone, and stays refused after the key is put again."""
    s, p = subject.store, subject.prefix
    old = s.grant(5)
    token = s.commit([], [Put(p + "alive", b"a", old)])
    assert token is not None
    assert s.commit([Compare(p + "alive", token)], [Put(p + "status", b"1")]) is not None
    s.revoke(old)
    assert s.commit([Compare(p + "alive", token)], [Put(p + "status", b"2")]) is None
    new = s.grant(5)
    again = s.commit([], [Put(p + "alive", b"a", new)])
    assert s.commit([Compare(p + "alive", token)], [Put(p + "status", b"3")]) is None
    assert s.commit([Compare(p + "alive", again or 0)], [Put(p + "status", b"4")]) is not None
    got = s.get(p + "status")
    assert got is not None and got.value == b"4"
    s.revoke(new)


def test_watch_replays_from_revision_and_follows_live_changes(subject: Subject) -> None:
    s, p = subject.store, subject.prefix
    start = s.commit([], [Put(p + "k1", b"a")])
    assert start is not None
    s.commit([], [Delete(p + "k1")])
    watch = s.watch(p, start)
    seen: list[WatchEvent] = []

    def consume() -> None:
        for ev in watch:
            seen.append(ev)
            if len(seen) == 4:
                return

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(0.2)
    lease = s.grant(1)
    s.commit([], [Put(p + "k2", b"b", lease)])
    s.revoke(lease)  # the bound key's deletion is an event too
    t.join(timeout=10)
    watch.cancel()
    assert [(e.kind, e.key.removeprefix(p), e.value) for e in seen] == [
        ("put", "k1", b"a"),
        ("delete", "k1", b""),
        ("put", "k2", b"b"),
        ("delete", "k2", b""),
    ]
    assert seen[0].revision == start and seen[1].revision == start + 1
    assert all(a.revision < b.revision for a, b in itertools.pairwise(seen))


def test_unreachable_etcd_is_named() -> None:
    store = EtcdStore("http://127.0.0.1:9", timeout=1)
    with pytest.raises(StoreUnavailable, match=r"etcd at http://127\.0\.0\.1:9 is unreachable"):
        store.get("/x")
