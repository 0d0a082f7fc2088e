"""Choose a host for a VM: filter the hosts that can take it, then weigh the rest.

Pure: takes the cluster as values and returns a decision. The API (for a synchronous answer
at create time) and the scheduler controller call the same :func:`place`.

Filters, in order; the reason for "no valid host" names the filter that removed the last
candidates, with its numbers:
  host-up, schedulable, host-pin, allowed-hosts, pool, network, cpu-model (the VM's named
  model is usable there, and its CPU's features are all offered there), anti-affinity,
  affinity, cpu, memory.
Weighers: ``spread`` prefers the host with the most free memory (then fewest VMs),
``pack`` the least; ties go to the host name, so decisions are deterministic. A VM's
preferred host wins over the weighers when it passes every filter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    cpu_models: frozenset[str] = frozenset()  # empty: not known (any model passes)
    cpu_features: frozenset[str] = frozenset()  # what its CPU offers; empty: not known (pass)


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
    cpu_model: str = ""  # a named model; empty: any
    cpu_features: frozenset[str] = frozenset()  # the cluster baseline's; empty: any
    allowed: frozenset[str] = frozenset()  # the hosts it may run on; empty: any
    preferred: str | None = None  # chosen over the weighers' pick when it passes every filter


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
class HostUsage:
    """What the VMs already on a host use, and the groups they belong to."""

    vcpus: int = 0
    memory_mib: int = 0
    count: int = 0
    groups: frozenset[str] = frozenset()  # "anti:<group>" and "aff:<group>"

    def plus(self, d: Demand) -> HostUsage:
        groups = set(self.groups)
        if d.anti_affinity:
            groups.add("anti:" + d.anti_affinity)
        if d.affinity:
            groups.add("aff:" + d.affinity)
        return HostUsage(
            self.vcpus + d.vcpus, self.memory_mib + d.memory_mib, self.count + 1, frozenset(groups)
        )


def usage_of(placed: Sequence[Placed], exclude: str = "") -> dict[str, HostUsage]:
    """Per-host usage of ``placed``, leaving out the VM named ``exclude``."""
    usage: dict[str, HostUsage] = {}
    for p in placed:
        if p.demand.name != exclude:
            usage[p.host] = usage.get(p.host, _EMPTY).plus(p.demand)
    return usage


_EMPTY = HostUsage()
# (name, keep this host?, reason when it removes the last candidates)
Filter = tuple[str, Callable[[HostView], bool], Callable[[list[HostView]], str]]


def _runs_cpu(vm: Demand, h: HostView) -> bool:
    if vm.cpu_model and h.cpu_models and vm.cpu_model not in h.cpu_models:
        return False
    return not h.cpu_features or vm.cpu_features <= h.cpu_features


def _cpu_refusal(vm: Demand, hosts: list[HostView]) -> str:
    if vm.cpu_model:
        return (
            f"CPU model {vm.cpu_model} incompatible: "
            f"{', '.join(h.name for h in hosts)} cannot provide it"
        )
    lacks = [f"{h.name} lacks {', '.join(sorted(vm.cpu_features - h.cpu_features))}" for h in hosts]
    return (
        f"guest CPU (the cluster baseline when the VM was created) incompatible: {'; '.join(lacks)}"
    )


def place(
    vm: Demand,
    hosts: Sequence[HostView],
    placed: Sequence[Placed] | Mapping[str, HostUsage],
    policy: Policy | None = None,
) -> Chosen | NoValidHost:
    """Choose a host for ``vm``. ``placed`` is the VMs already placed, or their per-host
    usage (:func:`usage_of`) when the caller keeps it up to date itself."""
    policy = policy or Policy()
    usage = placed if isinstance(placed, Mapping) else usage_of(placed, vm.name)

    def use(h: HostView) -> HostUsage:
        return usage.get(h.name, _EMPTY)

    def free_cpu(h: HostView) -> float:
        return h.cpus * policy.cpu_ratio - use(h).vcpus

    def free_mem(h: HostView) -> float:
        return h.memory_mib * policy.memory_ratio - use(h).memory_mib

    affinity_hosts = (
        {h for h, u in usage.items() if f"aff:{vm.affinity}" in u.groups} if vm.affinity else set()
    )
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
        (
            "allowed-hosts",
            lambda h: not vm.allowed or h.name in vm.allowed,
            lambda c: (
                f"none of its allowed hosts ({', '.join(sorted(vm.allowed))}) is available "
                "(down, unschedulable or unknown)"
            ),
        ),
        ("pool", lambda h: vm.pool in h.pools, lambda c: f"no host reaches pool {vm.pool}"),
        (
            "network",
            lambda h: vm.networks <= h.networks,
            lambda c: f"no host reaches network(s) {', '.join(sorted(vm.networks))}",
        ),
        ("cpu-model", lambda h: _runs_cpu(vm, h), lambda c: _cpu_refusal(vm, c)),
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

    if vm.preferred is not None and any(h.name == vm.preferred for h in candidates):
        return Chosen(vm.preferred)
    sign = -1 if policy.strategy == "spread" else 1
    best = min(candidates, key=lambda h: (sign * free_mem(h), use(h).count, h.name))
    return Chosen(best.name)
