"""The shared-pool check: a random id per pool, recorded once in the store and found in the
pool's directory by every host. Hosts are agents on the in-memory store; each host's view of
the filesystem is a real temporary directory tree (as its mount namespace would be)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from itertools import count
from pathlib import Path

from kumo.agent.agent import Agent, AgentConfig
from kumo.hypervisor.fake import FakeHypervisor
from kumo.model.activity import Event
from kumo.model.host import HostRecord, Pool, PoolIdentity
from kumo.sim.clock import VirtualClock
from kumo.storage.pool_identity import ID_FILE, DirPoolIds
from kumo.storage.volumes import FakeVolumes
from kumo.store import keys
from kumo.store.base import ClusterStore, Compare, Delete, Entry, Put, Watch
from kumo.store.memory import MemoryStore
from kumo.store.records import decode, load, put

POOL_PATH = "/var/lib/kumo/pools/shared"
IDS = {"h1": "1" * 32, "h2": "2" * 32, "h3": "3" * 32}


def make_store() -> MemoryStore:
    store = MemoryStore()
    store.commit(
        [], [put(keys.POOLS + "shared", Pool(name="shared", kind="shared-dir", path=POOL_PATH))]
    )
    return store


def mount(root: Path) -> DirPoolIds:
    """A host whose POOL_PATH is the directory ``root/POOL_PATH``."""
    (root / POOL_PATH.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return DirPoolIds(str(root))


def agent(store: ClusterStore, host: str, ids: DirPoolIds) -> Agent:
    return Agent(
        AgentConfig(host, "198.18.1.1", "qemu"),
        store,
        FakeHypervisor(host),
        FakeVolumes(),
        clock=VirtualClock(1000.0),
        path_exists=lambda p: True,
        pool_ids=ids,
        new_id=lambda: IDS[host],
    )


def pools_of(store: MemoryStore, host: str) -> tuple[str, ...]:
    found = load(store, HostRecord, keys.HOSTS + host)
    assert found is not None
    return found[0].pools


def recorded(store: MemoryStore) -> str:
    found = load(store, PoolIdentity, keys.POOL_IDS + "shared")
    assert found is not None
    return found[0].id


def id_file(root: Path) -> Path:
    return root / POOL_PATH.lstrip("/") / ID_FILE


def test_hosts_sharing_the_directory_agree_on_one_id_and_see_the_pool(tmp_path: Path) -> None:
    store, nas = make_store(), tmp_path / "nas"
    for h in ("h1", "h2"):
        agent(store, h, mount(nas)).register()
    assert recorded(store) == IDS["h1"]  # the first host's random id
    assert id_file(nas).read_text() == IDS["h1"] + "\n"
    assert pools_of(store, "h1") == pools_of(store, "h2") == ("shared",)
    assert sorted(p.name for p in id_file(nas).parent.iterdir()) == [ID_FILE]  # nothing aside


def test_a_different_directory_with_its_own_id_is_refused_naming_pool_path_and_ids(
    tmp_path: Path,
) -> None:
    store, nas, local = make_store(), tmp_path / "nas", tmp_path / "h3-local"
    agent(store, "h1", mount(nas)).register()
    mount(local)
    id_file(local).write_text(IDS["h3"] + "\n")  # a share of another cluster, say
    h3 = agent(store, "h3", DirPoolIds(str(local)))
    h3.register()
    assert pools_of(store, "h3") == ()
    problem = h3.mem.pool_problems["shared"]
    for part in ("pool shared", POOL_PATH, IDS["h3"], IDS["h1"], "recorded by h1"):
        assert part in problem
    events = [decode(Event, e) for e in store.range(keys.EVENTS)]
    assert [e.message for e in events if e.action == "pool-unavailable"] == [problem]
    assert recorded(store) == IDS["h1"]  # the refused host changed nothing


def test_an_empty_local_directory_is_refused_and_left_empty(tmp_path: Path) -> None:
    store = make_store()
    agent(store, "h1", mount(tmp_path / "nas")).register()
    h2 = agent(store, "h2", mount(tmp_path / "h2-unmounted"))
    h2.register()
    assert pools_of(store, "h2") == ()
    assert f"{POOL_PATH} has no {ID_FILE}" in h2.mem.pool_problems["shared"]
    assert not id_file(tmp_path / "h2-unmounted").exists()  # never written once recorded


def test_a_host_sees_the_pool_once_its_share_is_mounted(tmp_path: Path) -> None:
    store, nas = make_store(), tmp_path / "nas"
    agent(store, "h1", mount(nas)).register()
    view = DirPoolIds(str(tmp_path / "h2"))
    mount(tmp_path / "h2")
    h2 = agent(store, "h2", view)
    h2.register()
    assert pools_of(store, "h2") == ()
    view.root = str(nas)  # the share is mounted now
    h2.refresh_host()
    assert pools_of(store, "h2") == ("shared",)
    assert "shared" not in h2.mem.pool_problems


class StaleStore:
    """A host's view of the store that answers "no id recorded" to its first read of it: the
    host read the store just before another host recorded the pool's id."""

    def __init__(self, real: MemoryStore) -> None:
        self.real = real
        self.hidden = True

    def get(self, key: str) -> Entry | None:
        if key.startswith(keys.POOL_IDS) and self.hidden:
            self.hidden = False
            return None
        return self.real.get(key)

    def range(self, prefix: str) -> list[Entry]:
        return self.real.range(prefix)

    def revision(self) -> int:
        return self.real.revision()

    def commit(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> int | None:
        return self.real.commit(compares, ops)

    def grant(self, ttl: int) -> int:
        return self.real.grant(ttl)

    def keepalive(self, lease: int) -> None:
        self.real.keepalive(lease)

    def revoke(self, lease: int) -> None:
        self.real.revoke(lease)

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return self.real.watch(prefix, start_revision)

    def close(self) -> None:
        self.real.close()


def test_two_first_writers_on_one_directory_end_with_one_id(tmp_path: Path) -> None:
    store, nas = make_store(), tmp_path / "nas"
    agent(store, "h1", mount(nas)).register()
    late = StaleStore(store)
    h2 = agent(late, "h2", mount(nas))
    assert h2._reachable_pools() == ("shared",)
    assert not late.hidden  # it did take the first-writer path
    assert recorded(store) == IDS["h1"]
    assert id_file(nas).read_text() == IDS["h1"] + "\n"  # h2's id was never written over


def test_two_first_writers_on_different_directories_one_is_refused(tmp_path: Path) -> None:
    store = make_store()
    agent(store, "h1", mount(tmp_path / "nas")).register()
    h2 = agent(StaleStore(store), "h2", mount(tmp_path / "h2-local"))
    assert h2._reachable_pools() == ()
    assert recorded(store) == IDS["h1"]
    problem = h2.mem.pool_problems["shared"]
    assert IDS["h2"] in problem and IDS["h1"] in problem


def test_concurrent_creators_of_the_id_file_all_read_the_first_one(tmp_path: Path) -> None:
    ids = mount(tmp_path)
    n = count()
    results: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        got = ids.create(POOL_PATH, f"{next(n):032x}")
        with lock:
            results.append(got)

    threads = [threading.Thread(target=create) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16 and len(set(results)) == 1
    assert id_file(tmp_path).read_text() == results[0] + "\n"
