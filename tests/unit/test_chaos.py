"""The chaos run's pure half (kumo.chaos): the fault plan a seed gives (the same every time,
every kind of the catalogue, never fewer than 2 healthy hosts, gaps and holds in range), and
the judgement of the samples (double runs, outages, recovery times)."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

from kumo import chaos
from kumo import faults as vocabulary
from kumo.chaos import Beat, Episode, Injected, Outage
from kumo.lab.heartbeats import HeartbeatTail
from kumo.lab.plan import make_plan

HOSTS = ("h1", "h2", "h3")
ARGS = {"min_gap": 3.0, "max_gap": 10.0, "min_hold": 5.0, "max_hold": 15.0, "settle": 8.0}


def plan(seed: int = 11, faults: int = 100, hosts: tuple[str, ...] = HOSTS) -> chaos.ChaosPlan:
    return chaos.make_plan(seed, faults, hosts, **ARGS)


# -- the plan -----------------------------------------------------------------------------


def test_the_generator_is_splitmix64() -> None:
    """Fixed, so a seed written in the README keeps its faults on any Python."""
    rng = chaos.Rng(0)
    assert [rng._next() for _ in range(3)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]


def test_the_same_seed_gives_the_same_faults_and_another_seed_others() -> None:
    assert plan(11) == plan(11)
    assert plan(11).episodes != plan(12).episodes
    # a longer run starts with the shorter run's faults
    assert plan(11, 100).episodes[:10] == plan(11, 10).episodes


def test_every_kind_of_the_catalogue_comes_once_a_round() -> None:
    eps = plan(5, 3 * len(chaos.KINDS)).episodes
    for r in range(3):
        kinds = [e.kind for e in eps[r * len(chaos.KINDS) : (r + 1) * len(chaos.KINDS)]]
        assert sorted(kinds) == sorted(chaos.KINDS)
    assert {e.target for e in eps if e.on_host} == set(HOSTS)


@pytest.mark.parametrize(
    "hosts", [HOSTS, ("h1", "h2", "h3", "h4"), tuple(f"h{i}" for i in range(1, 9))]
)
@pytest.mark.parametrize("seed", [1, 2, 3, 11, 99])
def test_never_fewer_than_two_healthy_hosts_and_one_fault_a_host(
    hosts: tuple[str, ...], seed: int
) -> None:
    p = plan(seed, 100, hosts)
    on_hosts = [e for e in p.episodes if e.on_host]

    def unhealthy(t: float) -> list[Episode]:
        return [e for e in on_hosts if e.inject_at <= t < e.heal_at + p.settle]

    for e in p.episodes:  # the count only grows at an injection
        down = unhealthy(e.inject_at)
        assert len(hosts) - len(down) >= chaos.MIN_HEALTHY, (e, down)
        assert len({d.target for d in down}) == len(down), down  # one fault a host
    cluster = [e for e in p.episodes if not e.on_host]
    for a, b in itertools.pairwise(cluster):  # one cluster-wide fault at a time, settled
        assert b.inject_at >= a.heal_at + p.settle
    if len(hosts) >= 4:  # more hosts: host faults do overlap
        assert any(len(unhealthy(e.inject_at)) >= 2 for e in on_hosts)


def test_faults_overlap_sometimes() -> None:
    eps = plan(11).episodes
    assert any(b.inject_at < a.heal_at for a, b in itertools.combinations(eps, 2))


def test_gaps_and_holds_are_in_range() -> None:
    p = plan(7, 100)
    t = 0.0
    for e in p.episodes:
        gap = e.inject_at - t
        assert gap >= ARGS["min_gap"] - 1e-9
        drawn = gap - e.waited
        assert ARGS["min_gap"] - 0.11 <= drawn <= ARGS["max_gap"] + 0.11, e
        assert ARGS["min_hold"] - 0.11 <= e.heal_at - e.inject_at <= ARGS["max_hold"] + 0.11
        t = e.inject_at
    assert any(e.waited > 0 for e in p.episodes)  # the rules did make some wait


def test_the_timeline_heals_each_fault_after_injecting_it() -> None:
    p = plan(3, 30)
    timeline = p.timeline()
    assert [t for t, _, _ in timeline] == sorted(t for t, _, _ in timeline)
    seen: set[int] = set()
    for _, action, e in timeline:
        if action == "inject":
            seen.add(e.index)
        else:
            assert e.index in seen
    assert p.last_heal == max(e.heal_at for e in p.episodes)


EXPECTED = {
    "kill-host": vocabulary.PowerOff("h2"),
    "kill-libvirtd": vocabulary.KillLibvirtd("h2"),
    "kill-agent": vocabulary.KillAgent("h2"),
    "cut-public": vocabulary.Link("h2", "public", up=False),
    "cut-storage": vocabulary.Link("h2", "storage", up=False),
    "partition": vocabulary.Partition("h2"),
    "slow-public": vocabulary.Slow("h2", "public", 20.0),
    "slow-storage": vocabulary.Slow("h2", "storage", 20.0),
    "kill-etcd": vocabulary.StoreDown(),
    "kill-leader": vocabulary.LeaderCrash(),
    "router-down": vocabulary.Router(up=False),
    "nas-down": vocabulary.Nas(up=False),
}


@pytest.mark.parametrize("kind", chaos.KINDS)
def test_every_kind_is_the_lab_command_of_its_fault(kind: str) -> None:
    """The runner hands these words to `kumo lab fault`: the vocabulary must read them as
    the fault the kind names, and the heal as the heal of the node it hit."""
    target = "h2" if kind in chaos.HOST_KINDS else chaos._NODE[kind]
    e = Episode(1, kind, target, 0.0, 5.0, rate="20mbit" if kind.startswith("slow") else "")
    words = e.inject()
    assert vocabulary.from_lab(words[0], list(words[1:])) == EXPECTED[kind]
    assert vocabulary.from_lab("heal", list(e.heal()[1:])) == vocabulary.Heal(target)


def test_the_plan_draws_targets_and_rates_for_host_faults_only() -> None:
    eps = plan(1, 4 * len(chaos.KINDS)).episodes
    for e in eps:
        assert (e.target in HOSTS) == e.on_host
        assert (e.rate in chaos.SLOW_RATES) == e.kind.startswith("slow-")
    assert {e.target for e in eps if not e.on_host} == {"ctl", "router", "nas1"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"faults": 0}, "faults: 0 is not a positive"),
        ({"hosts": ("h1", "h2")}, "hosts: a chaos run needs at least 3 distinct hosts"),
        ({"min_gap": -1.0}, "min-gap: -1.0 is negative"),
        ({"max_gap": 1.0}, "max-gap: 1.0 is below min-gap 3.0"),
        ({"min_hold": 0.0}, "min-hold: 0.0 is not a positive"),
        ({"max_hold": 2.0}, "max-hold: 2.0 is below min-hold 5.0"),
        ({"settle": -2.0}, "settle: -2.0 is negative"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(
    change: dict[str, object], message: str
) -> None:
    kw: dict[str, object] = {"faults": 10, "hosts": HOSTS, **ARGS, **change}
    faults, hosts = kw.pop("faults"), kw.pop("hosts")
    with pytest.raises(chaos.ChaosError, match=message):
        chaos.make_plan(1, faults, hosts, **kw)  # type: ignore[arg-type]


# -- the judgement ------------------------------------------------------------------------


def every(t0: float, t1: float, step: float, names: frozenset[str]) -> list[chaos.Sample]:
    """Samples every ``step`` from t0 to t1, each answered 10 ms after it was asked."""
    n = round((t1 - t0) / step)
    return [(round(t0 + i * step, 3), round(t0 + i * step + 0.01, 3), names) for i in range(n + 1)]


VM = frozenset({"vm1"})
NONE: frozenset[str] = frozenset()


def test_a_live_migrations_switch_over_is_no_double_run() -> None:
    """The target's first sample showing the VM falls between the source's last two
    samples, but the source's last one no longer shows it (paused, then gone)."""
    samples = {
        "h1": every(0.0, 10.0, 0.2, VM) + every(10.2, 20.0, 0.2, NONE),
        "h2": every(0.1, 10.1, 0.2, NONE) + every(10.3, 20.1, 0.2, VM),
    }
    assert chaos.domain_doubles(samples) == []


def test_a_slow_answer_from_the_source_is_no_double_run() -> None:
    """The source's libvirtd, busy with the migration, answers its last 'running' 400 ms
    after it was asked; the target's first 'running' was asked and answered meanwhile. The
    source's list may have been made at the asking: nothing says both ran at once."""
    samples = {
        "h1": [*every(0.0, 9.8, 0.2, VM), (10.0, 10.4, VM), *every(10.6, 20.0, 0.2, NONE)],
        "h2": every(0.1, 10.1, 0.2, NONE) + every(10.3, 20.1, 0.2, VM),
    }
    assert chaos.domain_doubles(samples) == []
    # the same answer, quick: the source surely ran the VM when the target did
    samples["h1"][50] = (10.0, 10.01, VM)
    samples["h1"].insert(51, (10.35, 10.36, VM))
    assert [d.describe() for d in chaos.domain_doubles(samples)] == ["vm1 on h1 and h2 (domains)"]


def test_two_hosts_running_a_vm_at_once_is_a_double_run() -> None:
    samples = {
        "h1": every(0.0, 20.0, 0.2, VM),
        "h2": every(0.1, 9.9, 0.2, NONE)
        + every(10.1, 12.1, 0.2, VM)
        + every(12.3, 20.1, 0.2, NONE),
        "h3": every(0.05, 20.05, 0.2, NONE),
    }
    found = chaos.domain_doubles(samples)
    assert len(found) == 1, found
    d = found[0]
    assert (d.vm, d.evidence, d.first, d.second) == ("vm1", "domains", "h1", "h2")
    assert 10.0 <= d.start <= d.end <= 12.2


def test_a_host_whose_samples_stop_does_not_run_its_vm_in_the_gap() -> None:
    """h1 killed at 10 s (no samples for 20 s: its sampler died with it), the VM boots on h2
    at 15 s; h1 comes back at 30 s without it."""
    samples = {
        "h1": every(0.0, 10.0, 0.2, VM) + every(30.0, 40.0, 0.2, NONE),
        "h2": every(0.1, 14.9, 0.2, NONE) + every(15.1, 40.1, 0.2, VM),
    }
    assert chaos.domain_doubles(samples) == []


def beats(host: str, vm: str, boot: str, t0: float, t1: float) -> list[Beat]:
    return [Beat(t0 + i, host, vm, boot, i) for i in range(int(t1 - t0) + 1)]


def test_heartbeats_of_a_migrated_boot_and_of_a_failback_are_no_double_run() -> None:
    heard = (
        beats("h1", "vm1", "b1", 0, 10)  # then migrated live to h2
        + [Beat(10.25 + i, "h2", "vm1", "b1", 11 + i) for i in range(60)]
        + beats("h1", "vm1", "b1", 71, 90)  # and back (failback)
    )
    assert chaos.heartbeat_doubles(heard) == []


def test_two_boots_heartbeating_at_once_are_a_double_run() -> None:
    heard = beats("h1", "vm1", "b1", 0, 20) + [
        Beat(5.5 + i, "h2", "vm1", "b2", i) for i in range(10)
    ]
    found = chaos.heartbeat_doubles(heard)
    assert [(d.first, d.second, d.evidence) for d in found] == [
        ("h1 boot=b1", "h2 boot=b2", "heartbeat")
    ]


def test_a_killed_guest_then_a_new_boot_elsewhere_is_no_double_run() -> None:
    heard = beats("h1", "vm1", "b1", 0, 10) + beats("h2", "vm1", "b2", 25, 40)
    assert chaos.heartbeat_doubles(heard) == []


def test_outages_are_silences_longer_than_allowed_and_may_never_end() -> None:
    heard = beats("h1", "vm1", "b1", 0, 10) + beats("h2", "vm1", "b2", 25, 40)
    heard += beats("h1", "vm2", "b3", 0, 20)
    found = chaos.outages(heard, ["vm1", "vm2"], start=0, end=40)
    assert found == [Outage("vm1", 10, 25), Outage("vm2", 20, None)]
    assert found[0].seconds == 15 and found[1].seconds is None


def injected(index: int, kind: str, at: float) -> Injected:
    e = Episode(index, kind, "h1", at, at + 10)
    return Injected(e, 1000 + at, 1000 + at + 10)


def test_each_outage_is_laid_at_the_newest_faults_door() -> None:
    done = [injected(1, "kill-host", 0), injected(2, "kill-agent", 30), injected(3, "slow", 60)]
    found = [
        Outage("vm1", 999.5, 1012.0),  # its last heartbeat came just before fault 1
        Outage("vm2", 1001.0, 1020.0),
        Outage("vm1", 1031.0, None),
    ]
    rec = chaos.recoveries(done, found)
    assert [len(r.outages) for r in rec] == [2, 1, 0]
    assert rec[0].seconds == 20.0  # from fault 1 to the last of its outages' ends
    assert rec[1].seconds is None  # never recovered
    assert rec[2].seconds is None and rec[2].outages == ()


def report(**change: object) -> chaos.Report:
    base: dict[str, object] = {
        "seed": 1,
        "hosts": HOSTS,
        "vms": ("vm1",),
        "started_at": 1000.0,
        "recoveries": tuple(chaos.recoveries([injected(1, "kill-host", 0)], [])),
        "double_runs": (),
        "outages": (),
        "vms_not_running": {},
        "tasks_not_ended": (),
        "last_heal_at": 1050.0,
        "settled_s": 12.5,
    }
    base.update(change)
    return chaos.Report(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"double_runs": (chaos.DoubleRun("vm1", "domains", "h1", "h2", 1.0, 2.0),)},
        {"vms_not_running": {"vm1": "recovering"}},
        {"tasks_not_ended": ("t1 vm.migrate vm/vm1 running",)},
        {"settled_s": None},
        {"settled_s": 61.0},
    ],
)
def test_the_report_is_ok_only_when_the_issues_targets_are_met(change: dict[str, object]) -> None:
    assert report().ok
    assert not report(**change).ok


def test_the_reports_json_has_times_from_the_start() -> None:
    data = report().to_json()
    assert data["ok"] is True and data["seed"] == 1
    assert data["faults"][0]["fault"] == "kill-host h1"
    assert data["faults"][0]["injected_at_s"] == 0.0
    assert data["faults"][0]["healed_at_s"] == 10.0
    assert data["last_heal_at_s"] == 50.0 and data["settled_s"] == 12.5


# -- the heartbeat tail (kumo.lab.heartbeats), on files in a temporary directory --------------


def wait_for(cond: object, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_tail_reads_new_heartbeats_of_every_host_and_skips_old_ones(tmp_path: Path) -> None:
    def log(host: str, vm: str) -> Path:
        return tmp_path / f"{host}-{vm}-serial.log"

    log("h1", "vm1").write_text("KUMO-GUEST boot=old n=7 host=vm1\n")  # an earlier VM's
    tail = HeartbeatTail(make_plan(3), ["vm1"], log_path=log).start()
    try:
        with log("h1", "vm1").open("a") as f:
            f.write("noise\r\nKUMO-GUEST boot=b1 n=1 host=vm1\r\nKUMO-GUEST boot=b1 n=")
        wait_for(lambda: len(tail.beats) == 1)
        with log("h1", "vm1").open("a") as f:
            f.write("2 host=vm1\n")  # the rest of a line half-written before
        log("h2", "vm1").write_text("KUMO-GUEST boot=b2 n=0 host=vm1\n")  # a new file
        wait_for(lambda: len(tail.beats) == 3)
        os.unlink(log("h1", "vm1"))  # deleted and made again: read from its start
        log("h1", "vm1").write_text("KUMO-GUEST boot=b3 n=0 host=vm1\n")
        wait_for(lambda: len(tail.beats) == 4)
    finally:
        tail.stop()
    assert [(b.host, b.boot, b.n) for b in tail.beats] == [
        ("h1", "b1", 1),
        ("h1", "b1", 2),
        ("h2", "b2", 0),
        ("h1", "b3", 0),
    ]
    assert tail.heard_since("vm1", tail.beats[0].seen_at - 1)
    assert not tail.heard_since("vm1", time.time() + 1)
