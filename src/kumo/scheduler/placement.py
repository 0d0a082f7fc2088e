"""Choose a host for a VM: filter the hosts that can take it, then weigh the rest.

Pure: takes the cluster as values and returns a decision. The API (for a synchronous answer
at create time) and the scheduler controller call the same :func:`place`.

Filters, in order; the reason for "no valid host" names the filter that removed the last
candidates, with its numbers:
  host-up, schedulable, host-pin, pool, network, anti-affinity, affinity, cpu, memory.
Weighers: ``spread`` prefers the host with the most free memory (then fewest VMs),
``pack`` the least; ties go to the host name, so decisions are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class HostView:
    name: str
    up: bool
    schedulable: bool
    cpus: int
    memory_mib: int
    pools: frozenset[str]
    networks: frozenset[str]


@dataclass(frozen=True)
class Demand:
    """What a VM asks of a host."""

    name: str
    vcpus: int
    memory_mib: int
    pool: str
    networks: frozenset[str]
    pin: str | None = None
    affinity: str | None = None
    anti_affinity: str | None = None


@dataclass(frozen=True)
class Placed:
    """A VM already on a host (it uses capacity there and counts for its groups)."""

    demand: Demand
    host: str


@dataclass(frozen=True)
class Policy:
    cpu_ratio: float = 4.0
    memory_ratio: float = 1.0
    strategy: Literal["spread", "pack"] = "spread"


@dataclass(frozen=True)
class Chosen:
    host: str


@dataclass(frozen=True)
class NoValidHost:
    reason: str

    def __str__(self) -> str:
        return f"no valid host: {self.reason}"


@dataclass(frozen=True)
class _Usage:
    vcpus: int
    memory_mib: int
    count: int
    groups: frozenset[str]  # affinity and anti-affinity groups present


def _usage(placed: Sequence[Placed], exclude: str) -> dict[str, _Usage]:
    acc: dict[str, list[int]] = {}
    groups: dict[str, set[str]] = {}
    for p in placed:
        if p.demand.name == exclude:
            continue
        a = acc.setdefault(p.host, [0, 0, 0])
        a[0] += p.demand.vcpus
        a[1] += p.demand.memory_mib
        a[2] += 1
        g = groups.setdefault(p.host, set())
        if p.demand.anti_affinity:
            g.add("anti:" + p.demand.anti_affinity)
        if p.demand.affinity:
            g.add("aff:" + p.demand.affinity)
    return {h: _Usage(v[0], v[1], v[2], frozenset(groups.get(h, set()))) for h, v in acc.items()}


_EMPTY = _Usage(0, 0, 0, frozenset())
# (name, keep this host?, reason when it removes the last candidates)
Filter = tuple[str, Callable[[HostView], bool], Callable[[list[HostView]], str]]


def place(
    vm: Demand,
    hosts: Sequence[HostView],
    placed: Sequence[Placed],
    policy: Policy | None = None,
) -> Chosen | NoValidHost:
    policy = policy or Policy()
    usage = _usage(placed, vm.name)

    def use(h: HostView) -> _Usage:
        return usage.get(h.name, _EMPTY)

    def free_cpu(h: HostView) -> float:
        return h.cpus * policy.cpu_ratio - use(h).vcpus

    def free_mem(h: HostView) -> float:
        return h.memory_mib * policy.memory_ratio - use(h).memory_mib

    affinity_hosts = {
        p.host
        for p in placed
        if vm.affinity and p.demand.affinity == vm.affinity and p.demand.name != vm.name
    }
    if not hosts:
        return NoValidHost("no hosts are registered")

    filters: list[Filter] = [
        ("host-up", lambda h: h.up, lambda c: "no host is up"),
        (
            "schedulable",
            lambda h: h.schedulable,
            lambda c: "every host that is up is unschedulable (maintenance)",
        ),
        (
            "host-pin",
            lambda h: vm.pin is None or h.name == vm.pin,
            lambda c: f"host {vm.pin} is not available (down, unschedulable or unknown)",
        ),
        ("pool", lambda h: vm.pool in h.pools, lambda c: f"no host reaches pool {vm.pool}"),
        (
            "network",
            lambda h: vm.networks <= h.networks,
            lambda c: f"no host reaches network(s) {', '.join(sorted(vm.networks))}",
        ),
        (
            "anti-affinity",
            lambda h: vm.anti_affinity is None or f"anti:{vm.anti_affinity}" not in use(h).groups,
            lambda c: f"anti-affinity group {vm.anti_affinity}: every candidate host has a member",
        ),
        (
            "affinity",
            lambda h: not affinity_hosts or h.name in affinity_hosts,
            lambda c: f"affinity group {vm.affinity}: the hosts of its members cannot take it",
        ),
        (
            "cpu",
            lambda h: free_cpu(h) >= vm.vcpus,
            lambda c: f"not enough free vCPUs (needs {vm.vcpus}, overcommit {policy.cpu_ratio:g}x)",
        ),
        (
            "memory",
            lambda h: free_mem(h) >= vm.memory_mib,
            lambda c: (
                f"not enough free memory (needs {vm.memory_mib} MiB; most free on a "
                f"candidate host: {int(max(free_mem(h) for h in c))} MiB)"
            ),
        ),
    ]
    candidates = list(hosts)
    for _name, keep, reason in filters:
        remaining = [h for h in candidates if keep(h)]
        if not remaining:
            return NoValidHost(reason(candidates))
        candidates = remaining

    sign = -1 if policy.strategy == "spread" else 1
    best = min(candidates, key=lambda h: (sign * free_mem(h), use(h).count, h.name))
    return Chosen(best.name)
