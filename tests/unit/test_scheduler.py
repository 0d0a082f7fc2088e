"""Placement filters and weighers."""

from __future__ import annotations

from kumo.scheduler.placement import (
    Chosen,
    Demand,
    HostView,
    NoValidHost,
    Placed,
    Policy,
    place,
)

POOLS = frozenset({"shared"})
NETS = frozenset({"public"})


def host(
    name: str, *, up: bool = True, sched: bool = True, cpus: int = 2, mem: int = 1024
) -> HostView:
    return HostView(name, up, sched, cpus, mem, POOLS, NETS)


def vm(
    name: str,
    *,
    vcpus: int = 1,
    mem: int = 128,
    pin: str | None = None,
    aff: str | None = None,
    anti: str | None = None,
) -> Demand:
    return Demand(name, vcpus, mem, "shared", NETS, pin, aff, anti)


HOSTS = [host("h1"), host("h2"), host("h3")]


def test_spread_fills_hosts_evenly() -> None:
    placed: list[Placed] = []
    for i in range(9):
        result = place(vm(f"v{i}"), HOSTS, placed)
        assert isinstance(result, Chosen)
        placed.append(Placed(vm(f"v{i}"), result.host))
    counts = {h.name: sum(p.host == h.name for p in placed) for h in HOSTS}
    assert counts == {"h1": 3, "h2": 3, "h3": 3}


def test_pack_fills_one_host_first() -> None:
    placed = [Placed(vm("a"), "h2")]
    assert place(vm("b"), HOSTS, placed, Policy(strategy="pack")) == Chosen("h2")


def test_anti_affinity_uses_distinct_hosts_then_refuses() -> None:
    placed: list[Placed] = []
    for i in range(3):
        d = vm(f"g{i}", anti="web")
        r = place(d, HOSTS, placed)
        assert isinstance(r, Chosen)
        placed.append(Placed(d, r.host))
    assert len({p.host for p in placed}) == 3
    r = place(vm("g3", anti="web"), HOSTS, placed)
    assert isinstance(r, NoValidHost)
    assert str(r) == "no valid host: anti-affinity group web: every candidate host has a member"


def test_affinity_follows_the_group() -> None:
    placed = [Placed(vm("db", aff="app"), "h3")]
    assert place(vm("web", aff="app"), HOSTS, placed) == Chosen("h3")
    full = [Placed(vm("db", aff="app", mem=1000), "h3")]
    r = place(vm("web", aff="app", mem=128), HOSTS, full)
    # the group's host is full: affinity keeps only h3, and memory then removes it
    assert isinstance(r, NoValidHost) and r.reason.startswith("not enough free memory")


def test_memory_refusal_names_the_constraint_and_numbers() -> None:
    r = place(vm("big", mem=4096), HOSTS, [])
    assert isinstance(r, NoValidHost)
    assert (
        r.reason
        == "not enough free memory (needs 4096 MiB; most free on a candidate host: 1024 MiB)"
    )


def test_cpu_overcommit_ratio() -> None:
    one = [host("h1", cpus=1)]
    placed = [Placed(vm(f"v{i}"), "h1") for i in range(4)]
    r = place(vm("v5", mem=1), one, placed)
    assert isinstance(r, NoValidHost) and "vCPUs" in r.reason
    assert place(vm("v5", mem=1), one, placed, Policy(cpu_ratio=8.0)) == Chosen("h1")


def test_down_unschedulable_and_pinned_hosts() -> None:
    hosts = [host("h1", up=False), host("h2", sched=False), host("h3")]
    assert place(vm("a"), hosts, []) == Chosen("h3")
    r = place(vm("a", pin="h2"), hosts, [])
    assert isinstance(r, NoValidHost) and "host h2 is not available" in r.reason
    r = place(vm("a"), [host("h1", up=False)], [])
    assert isinstance(r, NoValidHost) and r.reason == "no host is up"
    assert place(vm("a", pin="h3"), hosts, []) == Chosen("h3")


def test_a_vm_does_not_count_against_itself() -> None:
    placed = [Placed(vm("a", mem=1024), "h1")]
    assert place(vm("a", mem=1024, pin="h1"), HOSTS, placed) == Chosen("h1")
