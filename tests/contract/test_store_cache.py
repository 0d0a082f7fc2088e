"""The watch-fed cache gives the same answers as the store, after sync()."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from kumo.model.host import Pool
from kumo.store.base import ClusterStore, Delete, Put
from kumo.store.cache import StoreCache
from kumo.store.etcd import EtcdStore
from kumo.store.memory import MemoryStore
from kumo.store.records import put


@pytest.fixture(params=["memory", "etcd"])
def store(request: pytest.FixtureRequest) -> Iterator[ClusterStore]:
    s: ClusterStore = (
        MemoryStore()
        if request.param == "memory"
        else EtcdStore(request.getfixturevalue("etcd_endpoint"))
    )
    yield s
    s.close()


def test_cache_follows_writes_deletes_and_leases(store: ClusterStore) -> None:
    prefix = f"/cachetest/{time.time_ns()}/"
    store.commit([], [Put(prefix + "a", b"1")])
    cache = StoreCache(store, prefix)
    cache.start()
    try:
        cache.sync()
        assert [e.key for e in cache.range(prefix)] == [prefix + "a"]
        lease = store.grant(5)
        store.commit([], [Put(prefix + "b", b"2", lease), Put(prefix + "c", b"3")])
        store.commit([], [Delete(prefix + "a")])
        cache.sync()
        assert [(e.key, e.value) for e in cache.range(prefix)] == [
            (prefix + "b", b"2"),
            (prefix + "c", b"3"),
        ]
        assert [e.key for e in cache.range(prefix)] == [e.key for e in store.range(prefix)]
        store.revoke(lease)
        cache.sync()
        assert cache.get(prefix + "b") is None
        store.commit([], [put(prefix + "pools/p", Pool(name="p", kind="shared-dir", path="/x"))])
        cache.sync()
        first = cache.models(Pool, prefix + "pools/")
        again = cache.models(Pool, prefix + "pools/")
        assert first["p"][0] is again["p"][0]  # decoded once
    finally:
        cache.stop()


def test_a_late_event_does_not_resurrect_a_key_deleted_before_a_relist() -> None:
    store = MemoryStore()
    created = store.commit([], [Put("/k/migration", b"m")])
    store.commit([], [Delete("/k/migration")])
    assert created is not None
    cache = StoreCache(store, "/k/")
    cache._relist()  # what a lagging watch forces (wait_for timed out)
    cache._apply("put", "/k/migration", b"m", created)  # the old event, arriving late
    assert cache.get("/k/migration") is None
