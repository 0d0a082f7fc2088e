"""The path monitor's judgement (kumo.agent.paths): misses, dampening, first judgement."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kumo import faults as f
from kumo.agent.paths import Dampening, PathJudge, PathMonitor, describe, path_targets, screen
from kumo.agent.ping import route_problem
from kumo.model.host import HostPaths, NetPath, Network, PathState, Pool
from kumo.sim.cluster import NAS
from kumo.sim.world import World
from kumo.store import keys
from kumo.store.records import load

GW, NAS1, NAS2 = "198.18.0.1", "198.18.1.2", "198.18.1.3"
D = Dampening(misses=3, up_s=5.0)


def state_of(judge: PathJudge) -> PathState:
    return judge.status.state  # read again each time (mypy would narrow the attribute)


def run(judge: PathJudge, rounds: str, targets: tuple[str, ...] = (GW,), t0: int = 0) -> list[str]:
    """Feed one round a second from ``t0``: ``+`` every target answers, ``-`` none does.
    Returns the state after each round."""
    seen = []
    for i, r in enumerate(rounds):
        judge.feed(targets, {t: r == "+" for t in targets}, D, t0 + i, 1000.0 + t0 + i)
        seen.append(str(judge.status.state))
    return seen


def test_a_fresh_judge_says_up_at_the_first_answer() -> None:
    j = PathJudge()
    assert state_of(j) == PathState.UNKNOWN
    assert j.feed((GW,), {GW: True}, D, 0.0, 1000.0)  # changed
    assert state_of(j) == PathState.UP and j.status.since == 1000.0
    assert j.status.detail == f"{GW} answering" and j.status.targets == (GW,)
    assert not j.feed((GW,), {GW: True}, D, 1.0, 1001.0)  # no change, no report


def test_a_fresh_judge_says_down_after_the_misses_not_before() -> None:
    j = PathJudge()
    assert run(j, "---") == ["unknown", "unknown", "down"]
    assert j.status.detail == f"{GW}: 3 pings unanswered" and j.status.since == 1002.0


def test_down_after_three_misses_in_a_row_only() -> None:
    j = PathJudge()
    assert run(j, "+--+--+---")[-1] == "down"
    j = PathJudge()
    assert set(run(j, "+--+--+--+--")) == {"up"}  # never three in a row


def test_up_again_only_after_five_seconds_of_answers() -> None:
    j = PathJudge()
    states = run(j, "+---" + "+++++" + "+")
    assert states[:4] == ["up", "up", "up", "down"]
    assert states[4:9] == ["down"] * 5  # answering at t=4..8: 0..4 s
    assert states[9] == "up"  # 5 s of answers
    assert j.status.detail == f"{GW} answering for 5 s" and j.status.since == 1009.0


def test_a_miss_restarts_the_dampening() -> None:
    j = PathJudge()
    states = run(j, "+---" + "++++-" + "++++++")  # 6 answers: 5 s
    assert states[8] == "down"  # the miss at t=8: not three, but the count starts again
    assert states[-2:] == ["down", "up"]


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 10)), max_size=20))
def test_a_path_flapping_faster_than_the_dampening_changes_at_most_once(
    phases: list[tuple[int, int]],
) -> None:
    """Answers for at most 5 rounds (4 s) between misses, however long the misses: once
    judged down, a path is never judged up again; nothing moves twice."""
    flapping = []
    for up, down in phases:
        flapping += [True] * up + [False] * down
    j = PathJudge()
    changes = [
        j.feed((GW,), {GW: a}, D, float(t), 1000.0 + t)
        for t, a in enumerate([False, False, False, *flapping])  # judged down at first
    ]
    assert state_of(j) == PathState.DOWN
    assert changes.count(True) == 1


@given(st.lists(st.booleans(), max_size=80))
def test_the_judgement_follows_the_rules(answers: list[bool]) -> None:
    """Against a plain restatement: down iff the last 3 rounds missed (once judged), up
    iff answered now and (first judgement, or answering for 5 s since the last miss)."""
    j = PathJudge()
    state = PathState.UNKNOWN
    streak_start: int | None = None
    for t, a in enumerate(answers):
        j.feed((GW,), {GW: a}, D, float(t), float(t))
        streak_start = (t if streak_start is None else streak_start) if a else None
        if t >= 2 and not any(answers[t - 2 : t + 1]):
            state = PathState.DOWN
        elif a and (state == PathState.UNKNOWN or t - (streak_start or 0) >= 5):
            state = PathState.UP
        assert state_of(j) == state, (t, answers[: t + 1])


def test_one_answering_target_of_two_is_enough() -> None:
    j = PathJudge()
    targets = (NAS1, NAS2)
    for t in range(5):
        j.feed(targets, {NAS1: False, NAS2: True}, D, float(t), float(t))
    assert state_of(j) == PathState.UP and j.status.detail == f"{NAS2} answering"
    for t in range(5, 8):
        j.feed(targets, {}, D, float(t), float(t))  # a target missing from the answers: a miss
    assert state_of(j) == PathState.DOWN
    assert j.status.detail == f"{NAS1}, {NAS2}: 3 pings unanswered"


def test_no_target_is_unknown() -> None:
    j = PathJudge()
    assert not j.feed((), {}, D, 0.0, 0.0)
    assert state_of(j) == PathState.UNKNOWN
    run(j, "+")
    assert state_of(j) == PathState.UP
    assert j.feed((), {}, D, 5.0, 1005.0)  # its last target removed: unknown again
    assert state_of(j) == PathState.UNKNOWN and j.status.targets == ()
    assert j.status.detail == "no address to ping"


def test_other_dampening_settings() -> None:
    j = PathJudge()
    quick = Dampening(misses=1, up_s=0.0)
    j.feed((GW,), {GW: False}, quick, 0.0, 0.0)
    assert state_of(j) == PathState.DOWN
    j.feed((GW,), {GW: True}, quick, 1.0, 1.0)
    assert state_of(j) == PathState.UP


def test_the_monitor_judges_both_paths_and_reports_them() -> None:
    m = PathMonitor()
    targets = {NetPath.PUBLIC: (GW,), NetPath.STORAGE: (NAS1,)}
    assert m.feed(targets, {GW: True, NAS1: False}, D, 0.0, 1000.0) == [NetPath.PUBLIC]
    for t in (1.0, 2.0):
        changed = m.feed(targets, {GW: True, NAS1: False}, D, t, 1000.0 + t)
    assert changed == [NetPath.STORAGE]
    rec = m.record("h1", 1002.0)
    assert rec.host == "h1" and rec.at == 1002.0
    assert rec.public.state == PathState.UP and rec.storage.state == PathState.DOWN
    assert describe(NetPath.STORAGE, rec.storage, "00:16:42 UTC") == (
        f"storage path down since 00:16:42 UTC: {NAS1}: 3 pings unanswered"
    )


def test_targets_are_the_host_networks_gateways_and_its_shared_pools_nas() -> None:
    nets = {
        "public": Network(name="public", bridge="br0", cidr="198.18.0.0/24", gateway=GW),
        "other": Network(name="other", bridge="br9", cidr="10.9.0.0/24", gateway="10.9.0.1"),
        "plain": Network(name="plain", bridge="br2"),
    }
    pools = {
        "shared": Pool(name="shared", kind="shared-dir", path="/p", nas=(NAS2, NAS1)),
        "local": Pool(name="local", kind="local-dir", path="/l", nas=("198.18.1.9",)),
    }
    got = path_targets(("shared", "local", "gone"), ("public", "plain"), pools, nets)
    assert got == {NetPath.PUBLIC: (GW,), NetPath.STORAGE: (NAS1, NAS2)}
    assert path_targets((), (), pools, nets) == {NetPath.PUBLIC: (), NetPath.STORAGE: ()}


def test_a_target_that_would_not_test_the_path_is_screened_out_with_the_reason() -> None:
    targets = {NetPath.PUBLIC: (GW,), NetPath.STORAGE: (NAS1, NAS2)}
    kept, notes = screen(targets, {NAS1: "not on any network of this host (reached through x)"})
    assert kept == {NetPath.PUBLIC: (GW,), NetPath.STORAGE: (NAS2,)}
    assert notes == {
        NetPath.STORAGE: f"not pinged: {NAS1}: not on any network of this host (reached through x)"
    }
    assert screen(targets, {}) == (targets, {})


def test_a_path_whose_every_target_is_screened_out_is_unknown_and_says_why() -> None:
    j = PathJudge()
    run(j, "+")
    assert j.feed((), {}, D, 5.0, 1005.0, note=f"not pinged: {NAS1}: it is this host's own address")
    assert state_of(j) == PathState.UNKNOWN
    assert j.status.detail == f"not pinged: {NAS1}: it is this host's own address"


def test_the_kernels_route_says_which_targets_are_not_on_the_hosts_networks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ip route get`` asks the kernel, sends nothing: the host's own address and a route
    through a gateway are problems, a direct route is not."""
    assert route_problem("127.0.0.1") == "it is this host's own address"
    answers = {
        NAS1: '[{"dst":"198.18.1.2","dev":"eth1","prefsrc":"198.18.1.5","flags":[]}]',
        NAS2: '[{"dst":"198.18.1.3","gateway":"198.18.0.1","dev":"eth0","flags":[]}]',
    }

    def fake_run(argv: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 0, answers[argv[-1]], "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert route_problem(NAS1) == ""
    assert route_problem(NAS2) == "not on any network of this host (reached through 198.18.0.1)"


def test_an_agent_reports_a_nas_address_it_cannot_reach_directly() -> None:
    """The pool's NAS is reached through a gateway from h1: pinging it would test the
    gateway, not h1's storage link. h1 does not ping it: its storage path is unknown with the
    reason (kumo host list shows it), an event says so, and h1 is never degraded for it."""
    w = World(replicas=1)
    h1 = w.hosts["h1"].agent
    assert h1 is not None
    h1.route_problem = lambda a: "not on any network of this host (reached through 10.0.0.1)"
    w.run(5)
    found = load(w.store, HostPaths, keys.PATHS + "h1")
    assert found is not None
    storage = found[0].storage
    assert storage.state == PathState.UNKNOWN and storage.targets == ()
    assert storage.detail == (
        f"not pinged: {NAS}: not on any network of this host (reached through 10.0.0.1)"
    )
    assert found[0].public.state == PathState.UNKNOWN  # the router: screened out too
    assert any("storage path: not pinged" in line for line in w.log)
    w.apply(f.Link("h2", "storage", up=False))  # h1's unknown path does not count for h2
    w.run(10)
    assert {h.name: h.state for h in w.service.queries.hosts()}["h1"] == "up"


def test_a_vm_in_an_nbd_pool_gets_a_raw_disk_opened_over_nbd() -> None:
    """The agent makes the disk raw (a fixed-size export cannot grow a qcow2) and defines it
    as an NBD network disk on the pool's server, exported by its file name."""
    from kumo.server.schemas import ImageImport, PoolCreate, VMCreate

    w = World(replicas=1)
    w.service.create_pool(
        PoolCreate(name="nbd", path="/nbdpool", nas=[NAS], nbd=f"{NAS}:10809"), "t"
    )
    w.service.import_image(ImageImport(name="img2", pool="nbd", path="images/g.qcow2"), "t")
    w.run(31)  # the agents see the new pool (they look again every 30 s)
    w.service.create_vm(VMCreate(name="web1", image="img2", memory_mib=128, host="h1"), "t")
    w.run(5)
    hv = w.hosts["h1"].hv
    disk = hv._doms["web1"].config.disks[0]
    assert (disk.path, disk.format, disk.nbd) == (
        "/nbdpool/vms/web1.raw",
        "raw",
        (NAS, 10809, "web1.raw"),
    )
    assert w.running_on("web1") == ["h1"]
