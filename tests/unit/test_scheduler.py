"""Placement filters and weighers."""

from __future__ import annotations

from kumo.scheduler.placement import (
    Chosen,
    Demand,
    HostUsage,
    HostView,
    NoValidHost,
    Placed,
    Policy,
    place,
    usage_of,
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


def refusal(d: Demand, hosts: list[HostView], placed: list[Placed] | None = None) -> str:
    r = place(d, hosts, placed or [])
    assert isinstance(r, NoValidHost)
    return r.reason


def test_usage_sums_each_host_s_vms_and_their_groups_leaving_one_out() -> None:
    placed = [
        Placed(vm("a", vcpus=2, mem=100, anti="web"), "h1"),
        Placed(vm("b", vcpus=1, mem=50, aff="db"), "h1"),
        Placed(vm("c", mem=10), "h2"),
    ]
    assert usage_of(placed) == {
        "h1": HostUsage(3, 150, 2, frozenset({"anti:web", "aff:db"})),
        "h2": HostUsage(1, 10, 1, frozenset()),
    }
    assert usage_of(placed, exclude="b") == {
        "h1": HostUsage(2, 100, 1, frozenset({"anti:web"})),
        "h2": HostUsage(1, 10, 1, frozenset()),
    }


def test_equal_free_memory_goes_to_the_host_with_fewer_vms() -> None:
    placed = [Placed(vm("a", mem=64), "h1"), Placed(vm("b", mem=64), "h1")]
    placed.append(Placed(vm("c", mem=128), "h2"))
    hosts = [host("h1"), host("h2")]
    assert place(vm("d"), hosts, placed) == Chosen("h2")
    assert place(vm("d"), hosts, placed, Policy(strategy="pack")) == Chosen("h2")


def test_memory_overcommit_ratio() -> None:
    one = [host("h1", mem=1024)]
    assert place(vm("a", mem=1536), one, [], Policy(memory_ratio=1.5)) == Chosen("h1")
    r = place(vm("a", mem=1537), one, [], Policy(memory_ratio=1.5))
    assert isinstance(r, NoValidHost) and "most free on a candidate host: 1536 MiB" in r.reason


def test_a_vm_that_fills_the_free_vcpus_exactly_fits() -> None:
    assert place(vm("a", vcpus=8, mem=1), [host("h1", cpus=2)], []) == Chosen("h1")  # 2 x 4
    assert "vCPUs" in refusal(vm("a", vcpus=9, mem=1), [host("h1", cpus=2)])


def test_each_filter_names_itself_in_the_refusal() -> None:
    assert refusal(vm("a"), []) == "no hosts are registered"
    assert refusal(vm("a"), [host("h1", sched=False)]) == (
        "every host that is up is unschedulable (maintenance)"
    )
    other_pool = Demand("a", 1, 128, "local", NETS)
    assert refusal(other_pool, HOSTS) == "no host reaches pool local"
    two_nets = Demand("a", 1, 128, "shared", frozenset({"public", "storage", "backup"}))
    assert refusal(two_nets, HOSTS) == "no host reaches network(s) backup, public, storage"
    full = [Placed(vm("db", aff="app", vcpus=8), "h3")]
    assert refusal(vm("web", aff="app"), HOSTS, full) == (
        "not enough free vCPUs (needs 1, overcommit 4x)"
    )
    assert refusal(vm("web", aff="app"), HOSTS[:2], full) == (
        "affinity group app: the hosts of its members cannot take it"
    )


def test_cpu_refusals_name_every_host_and_what_it_lacks() -> None:
    def cpu_host(name: str, models: set[str], features: set[str]) -> HostView:
        return HostView(
            name, True, True, 2, 1024, POOLS, NETS, frozenset(models), frozenset(features)
        )

    hosts = [cpu_host("h1", {"qemu64"}, {"sse2"}), cpu_host("h2", {"qemu64"}, {"lm"})]
    named = Demand("a", 1, 128, "shared", NETS, cpu_model="Nehalem")
    assert refusal(named, hosts) == "CPU model Nehalem incompatible: h1, h2 cannot provide it"
    baseline = Demand("a", 1, 128, "shared", NETS, cpu_features=frozenset({"avx2", "lm", "sse2"}))
    assert refusal(baseline, hosts) == (
        "guest CPU (the cluster baseline when the VM was created) incompatible: "
        "h1 lacks avx2, lm; h2 lacks avx2, sse2"
    )


def test_allowed_hosts_limit_the_candidates_and_name_them_when_none_is_left() -> None:
    d = Demand("a", 1, 128, "shared", NETS, allowed=frozenset({"h2", "h3"}))
    placed = [Placed(vm("x"), "h2")]  # spread would pick h1 (most free), which is not allowed
    assert place(d, HOSTS, placed) == Chosen("h3")
    down = [host("h1"), host("h2", up=False), host("h3", sched=False)]
    result = place(d, down, [])
    assert isinstance(result, NoValidHost)
    assert "none of its allowed hosts (h2, h3) is available" in result.reason


def test_the_preferred_host_wins_when_it_passes_every_filter() -> None:
    placed = [Placed(vm("x", mem=512), "h2")]  # h2 has the least free memory
    assert place(Demand("a", 1, 128, "shared", NETS, preferred="h2"), HOSTS, placed) == Chosen("h2")
    full = [Placed(vm("x", mem=1000), "h2")]  # h2 cannot take 128 MiB more: the weighers decide
    assert place(Demand("a", 1, 128, "shared", NETS, preferred="h2"), HOSTS, full) == Chosen("h1")
    not_allowed = Demand("a", 1, 128, "shared", NETS, allowed=frozenset({"h3"}), preferred="h2")
    assert place(not_allowed, HOSTS, []) == Chosen("h3")
