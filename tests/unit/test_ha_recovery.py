"""The pure recovery planner: priority order, hard rules, reasons, the start-failure policy."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kumo.ha.recovery import (
    AfterFailedStart,
    Orphan,
    Restart,
    Waits,
    after_failed_start,
    plan_recovery,
    recovery_order,
)
from kumo.scheduler.placement import Demand, HostView, Placed

NETS = frozenset({"public"})


def host(name: str, *, up: bool = True, mem: int = 1024, cpus: int = 4) -> HostView:
    return HostView(name, up, True, cpus, mem, frozenset({"shared"}), NETS)


def orphan(
    name: str,
    *,
    prio: int = 0,
    mem: int = 256,
    was_on: str = "h1",
    allowed: frozenset[str] = frozenset(),
    preferred: str | None = None,
    anti: str | None = None,
) -> Orphan:
    d = Demand(
        name, 1, mem, "shared", NETS, anti_affinity=anti, allowed=allowed, preferred=preferred
    )
    return Orphan(d, prio, was_on)


def test_the_highest_priority_gets_the_capacity_and_the_rest_wait_with_the_reason() -> None:
    hosts = [host("h1", up=False), host("h2", mem=600)]
    plan = plan_recovery(
        [orphan("low", prio=1), orphan("high", prio=100), orphan("mid", prio=50)], hosts, []
    )
    assert plan == [
        Restart("high", "h2", "h1", 100),
        Restart("mid", "h2", "h1", 50),
        Waits("low", "h1", 1, plan[2].reason if isinstance(plan[2], Waits) else ""),
    ]
    assert isinstance(plan[2], Waits)
    assert "not enough free memory (needs 256 MiB" in plan[2].reason


def test_equal_priorities_go_by_name() -> None:
    assert [o.demand.name for o in recovery_order([orphan("b"), orphan("a"), orphan("c")])] == [
        "a",
        "b",
        "c",
    ]


def test_vms_on_live_hosts_use_capacity_and_those_on_dead_hosts_do_not() -> None:
    hosts = [host("h1", up=False), host("h2", mem=512), host("h3", mem=512)]
    placed = [Placed(orphan("dead-one", mem=512).demand, "h1"), Placed(orphan("x").demand, "h2")]
    plan = plan_recovery([orphan("a", mem=512)], hosts, placed)
    assert plan == [Restart("a", "h3", "h1", 0)]


def test_allowed_preferred_and_anti_affinity_are_kept() -> None:
    hosts = [host("h1", up=False), host("h2"), host("h3"), host("h4")]
    plan = plan_recovery(
        [
            orphan("only-h4", allowed=frozenset({"h4"})),
            orphan("likes-h3", preferred="h3"),
            orphan("db1", anti="db"),
            orphan("db2", anti="db"),
            orphan("nowhere", allowed=frozenset({"h1"})),
        ],
        hosts,
        [Placed(orphan("db0", anti="db").demand, "h2")],
    )
    by_vm = {d.vm: d for d in plan}
    assert by_vm["only-h4"] == Restart("only-h4", "h4", "h1", 0)
    assert by_vm["likes-h3"] == Restart("likes-h3", "h3", "h1", 0)
    db_hosts = {by_vm["db1"].host, by_vm["db2"].host}  # type: ignore[union-attr]
    assert db_hosts == {"h3", "h4"}
    assert isinstance(by_vm["nowhere"], Waits)
    assert "none of its allowed hosts (h1)" in by_vm["nowhere"].reason


names = st.sampled_from([f"v{i}" for i in range(12)])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(names, st.integers(0, 1000), st.integers(64, 900)), unique_by=lambda t: t[0]
    ),
    st.lists(st.tuples(st.booleans(), st.integers(256, 2048)), min_size=1, max_size=5),
)
def test_never_on_a_dead_host_never_over_capacity_and_priority_first(
    vms: list[tuple[str, int, int]], host_specs: list[tuple[bool, int]]
) -> None:
    hosts = [host(f"h{i}", up=up, mem=mem) for i, (up, mem) in enumerate(host_specs)]
    orphans = [orphan(n, prio=p, mem=m, was_on="dead") for n, p, m in vms]
    plan = plan_recovery(orphans, hosts, [])
    assert sorted(d.vm for d in plan) == sorted(n for n, _, _ in vms)
    mem = {h.name: h.memory_mib for h in hosts}
    used = dict.fromkeys(mem, 0)
    need = {n: m for n, _, m in vms}
    for d in plan:
        if isinstance(d, Restart):
            assert d.host in {h.name for h in hosts if h.up}
            used[d.host] += need[d.vm]
    assert all(used[h] <= mem[h] for h in mem)
    # the plan lists VMs in priority order; a VM waits only if it fits on no live host
    # given what the VMs before it took
    prios = [d.priority for d in plan]
    assert prios == sorted(prios, reverse=True)
    taken = dict.fromkeys(mem, 0)
    for d in plan:
        if isinstance(d, Restart):
            taken[d.host] += need[d.vm]
        else:
            assert all(taken[h.name] + need[d.vm] > h.memory_mib for h in hosts if h.up), d


def test_a_failed_start_is_retried_then_relocated_then_an_error() -> None:
    assert after_failed_start(0, 0) is AfterFailedStart.RETRY
    assert after_failed_start(1, 0) is AfterFailedStart.RELOCATE
    assert after_failed_start(1, 1) is AfterFailedStart.ERROR
    assert after_failed_start(0, 1) is AfterFailedStart.RETRY  # a new host gets its retries
    assert after_failed_start(2, 0, max_restart=3) is AfterFailedStart.RETRY
    assert after_failed_start(0, 0, max_restart=0, max_relocate=0) is AfterFailedStart.ERROR
    assert after_failed_start(0, 2, max_restart=0, max_relocate=3) is AfterFailedStart.RELOCATE
