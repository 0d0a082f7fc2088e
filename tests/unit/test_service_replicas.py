"""Two API replicas, each with its own watch-fed cache, placing against one store: the
sched-epoch compare-and-swap keeps them from overcommitting a host between them."""

from __future__ import annotations

import time

from kumo.model.host import HostRecord
from kumo.server.errors import Conflict
from kumo.server.schemas import ImageImport, NetworkCreate, PoolCreate, VMCreate
from kumo.server.service import ClusterService
from kumo.store import keys
from kumo.store.cache import StoreCache
from kumo.store.memory import MemoryStore
from kumo.store.records import put


def test_two_replicas_never_overcommit() -> None:
    store = MemoryStore()
    caches = [StoreCache(store), StoreCache(store)]
    for c in caches:
        c.start()
    a, b = (ClusterService(store, view=c) for c in caches)
    a.create_pool(PoolCreate(name="shared", path="/p"), "t")
    a.create_network(NetworkCreate(name="public", bridge="br0"), "t")
    a.import_image(ImageImport(name="img", pool="shared", path="i.qcow2"), "t")
    lease = store.grant(60)
    rec = HostRecord(
        name="h1",
        address="198.18.1.11",
        cpus=8,
        memory_mib=1000,
        libvirt_version="9.0.0",
        qemu_version="7.2.0",
        domain_type="qemu",
        pools=("shared",),
        networks=("public",),
        agent_port=1,
        registered_at=0,
    )
    store.commit([], [put(keys.HOSTS + "h1", rec), put(keys.ALIVE + "h1", rec, lease)])
    placed, refused = [], []
    for i in range(6):
        svc = (a, b)[i % 2]
        try:
            svc.create_vm(VMCreate(name=f"v{i}", image="img", memory_mib=300), "t")
            placed.append(i)
        except Conflict as exc:
            refused.append(str(exc))
        time.sleep(0.01 if i % 3 else 0)  # sometimes the other cache lags, sometimes not
    assert placed == [0, 1, 2]
    assert all("not enough free memory" in r for r in refused)
    assert len(store.range(keys.PLACEMENT)) == 3
    for c in caches:
        c.stop()
