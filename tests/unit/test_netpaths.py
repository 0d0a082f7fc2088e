"""Network-path failover, the leader's rule (kumo.server.netpaths.judge): who is cut off."""

from __future__ import annotations

import pytest

from kumo import faults as f
from kumo.model.activity import Task
from kumo.model.host import Degraded, HostPaths, NetPath, PathState, PathStatus
from kumo.server.netpaths import judge, retry_wait
from kumo.server.schemas import HAPolicy, VMCreate
from kumo.sim.world import World
from kumo.store import keys
from kumo.store.records import load, load_all

U, D, X = PathState.UP, PathState.DOWN, PathState.UNKNOWN


def paths(
    public: dict[str, PathState], storage: dict[str, PathState] | None = None
) -> dict[str, HostPaths]:
    storage = storage or {}
    return {
        h: HostPaths(
            host=h,
            public=PathStatus(state=s),
            storage=PathStatus(state=storage.get(h, U)),
        )
        for h, s in public.items()
    }


def test_a_host_alone_without_the_router_is_degraded() -> None:
    v = judge(paths({"h1": D, "h2": U, "h3": U}))
    assert v.degrade == {"h1": NetPath.PUBLIC} and v.everywhere == ()


def test_two_hosts_the_one_that_lost_the_router_is_the_odd_one() -> None:
    assert judge(paths({"h1": D, "h2": U})).degrade == {"h1": NetPath.PUBLIC}


def test_the_router_down_for_everyone_moves_nothing() -> None:
    v = judge(paths({"h1": D, "h2": D, "h3": D}))
    assert v.degrade == {} and v.everywhere == (NetPath.PUBLIC,)


@pytest.mark.parametrize(
    ("state", "degraded"),
    [
        ({"h1": D, "h2": D, "h3": U}, {}),  # half of the others lost it too: not a majority
        ({"h1": D, "h2": D, "h3": U, "h4": U, "h5": U}, {"h1", "h2"}),  # 3 of 4 others have it
        ({"h1": D, "h2": X, "h3": X}, {}),  # nobody else knows: nothing to compare with
        ({"h1": D, "h2": U, "h3": X}, {"h1"}),  # unknown paths are not counted
        ({"h1": D}, {}),  # a single host is never the odd one
    ],
)
def test_a_host_is_degraded_only_when_most_other_hosts_have_the_path(
    state: dict[str, PathState], degraded: dict[str, PathState]
) -> None:
    assert set(judge(paths(state)).degrade) == set(degraded)


def test_the_storage_path_is_judged_the_same_way_and_comes_first() -> None:
    """h3 lost both: it is marked for its storage path, so nothing is live-migrated over the
    network that failed."""
    v = judge(paths({"h1": U, "h2": U, "h3": D, "h4": U}, {"h1": D, "h2": U, "h3": D, "h4": U}))
    assert v.degrade == {"h1": NetPath.STORAGE, "h3": NetPath.STORAGE}
    v = judge(paths({"h1": U, "h2": U, "h3": D, "h4": U}))
    assert v.degrade == {"h3": NetPath.PUBLIC}
    v = judge(paths({"h1": U, "h2": U}, {"h1": D, "h2": D}))
    assert v.degrade == {} and v.everywhere == (NetPath.STORAGE,)


def _vm(w: World, name: str, host: str, **ha: object) -> None:
    w.service.create_vm(
        VMCreate(name=name, image="img", memory_mib=128, host=host, ha=HAPolicy.model_validate(ha)),
        "t",
    )


def test_a_vm_created_with_host_moves_off_a_host_that_lost_the_router() -> None:
    """``--host`` pins where a VM is created; like HA recovery, path failover moves it by its
    HA hosts and preferred host instead (a pinned VM used to stay: "pinned, give --to")."""
    w = World(replicas=1)
    _vm(w, "web1", "h1", hosts=["h1", "h2"])
    _vm(w, "web2", "h1", mode="off")
    w.run(3)
    w.apply(f.Link("h1", "public", up=False))
    w.run(20)
    assert w.running_on("web1") == ["h2"]  # its HA hosts: h1 or h2, and h1 is degraded
    assert w.running_on("web2") == ["h1"]  # HA off: left alone
    degraded = load(w.store, Degraded, keys.DEGRADED + "h1")
    assert degraded is not None and degraded[0].path == NetPath.PUBLIC
    tasks = [t for t, _ in load_all(w.store, Task, keys.TASKS).values() if t.kind == "vm.migrate"]
    assert [t.reason.split(" since ")[0] for t in tasks] == ["public path of h1 down"]
    assert [h.state for h in w.service.queries.hosts()] == ["degraded", "up", "up"]
    w.apply(f.Link("h1", "public", up=True))
    w.run(10)
    assert load(w.store, Degraded, keys.DEGRADED + "h1") is None
    assert w.running_on("web1") == ["h2"]  # no failback asked: it stays


def test_a_degraded_host_is_judged_again_every_pass() -> None:
    """h1 alone lost the router: degraded, its VM moves. Then the router goes for everyone:
    h1 is no longer the odd one out, its mark goes, and nothing else moves (an HA VM turned
    on meanwhile stays where it is). The router back, h1 (its link still cut) is degraded again."""
    w = World(replicas=1)
    _vm(w, "web1", "h1")
    _vm(w, "web2", "h1", mode="off")
    w.run(3)
    w.apply(f.Link("h1", "public", up=False))
    w.run(15)
    assert load(w.store, Degraded, keys.DEGRADED + "h1") is not None
    assert w.running_on("web1") != ["h1"] and w.running_on("web2") == ["h1"]
    w.apply(f.Router(up=False))
    w.run(6)
    assert load(w.store, Degraded, keys.DEGRADED + "h1") is None
    assert [h.state for h in w.service.queries.hosts()] == ["up", "up", "up"]
    w.apply(f.VmHa("web2", "restart"))
    w.run(10)
    assert w.running_on("web2") == ["h1"]  # the router down for everyone moves nothing
    assert any("lost by most hosts now" in line for line in w.log)
    w.apply(f.Router(up=True))
    w.run(10)  # h1's own link is still cut: once the others have the router, it is odd again
    assert [h.state for h in w.service.queries.hosts()] == ["degraded", "up", "up"]


def test_a_vm_that_cannot_leave_is_asked_to_move_again_less_and_less_often() -> None:
    """No other host takes web1 (their QEMUs refuse incoming migrations): its moves fail, and
    are asked again after 10, 20, 40 s, not every pass. Once a host takes it, it leaves."""
    assert [retry_wait(n) for n in (1, 2, 3, 4, 5, 6)] == [10, 20, 40, 80, 120, 120]
    w = World(replicas=1)
    _vm(w, "web1", "h1")
    w.run(3)
    for h in ("h2", "h3"):
        w.hosts[h].hv.accept_migrations = False
    w.apply(f.Link("h1", "public", up=False))
    w.run(70)
    tasks = [t for t, _ in load_all(w.store, Task, keys.TASKS).values() if t.kind == "vm.migrate"]
    assert 3 <= len(tasks) <= 4, [(t.created_at, t.state) for t in tasks]
    assert w.running_on("web1") == ["h1"]
    assert any("move(s) failed; next try in" in line for line in w.log)
    w.hosts["h2"].hv.accept_migrations = True
    w.run(90)
    assert w.running_on("web1") == ["h2"]
