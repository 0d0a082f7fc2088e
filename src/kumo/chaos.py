"""The chaos run's pure half: which faults, on what and when (a plan drawn from a seed), and
what the samples say afterwards (double runs, outages, recovery times). The lab's runner
(kumo.lab.chaos) applies the plan and gathers the samples; nothing here reads a clock, draws
from the system's randomness or touches a process: the same seed gives the same plan.

The plan's rules (docs/lab.md, "Chaos"):

- Kinds come in shuffled rounds of the whole catalogue (``KINDS``): any ``len(KINDS)``
  faults in a row hold every kind once.
- A host has one fault at a time, so that ``heal HOST`` undoes exactly that fault. A host
  counts as unhealthy from its fault until ``settle`` seconds after its heal (it rejoins),
  and a host fault is only injected while it leaves at least ``MIN_HEALTHY`` (2) healthy
  hosts: with 3 hosts, one host fault at a time.
- The cluster-wide faults (etcd, the leading server, the router, the NAS) take turns: one at
  a time, also ``settle`` seconds apart. They may overlap a host fault.
- Each fault is injected ``min_gap``..``max_gap`` seconds after the one before, later when
  the rules above make it wait (``Episode.waited``), and healed ``min_hold``..``max_hold``
  seconds after it was injected.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

MIN_HEALTHY = 2
HOST_KINDS: tuple[str, ...] = (
    "kill-host",
    "kill-libvirtd",
    "kill-agent",
    "cut-public",
    "cut-storage",
    "partition",
    "slow-public",
    "slow-storage",
)
CLUSTER_KINDS: tuple[str, ...] = ("kill-etcd", "kill-leader", "router-down", "nas-down")
KINDS: tuple[str, ...] = HOST_KINDS + CLUSTER_KINDS
SLOW_RATES: tuple[str, ...] = ("20mbit", "100mbit")
_NODE = {"kill-etcd": "ctl", "kill-leader": "ctl", "router-down": "router", "nas-down": "nas1"}

T = TypeVar("T")


class ChaosError(ValueError):
    """Bad chaos parameters; the message names the field and what is allowed."""


class Rng:
    """SplitMix64: a small, fixed generator, so a seed's plan is the same on every Python
    (the contract of the pure core keeps ``random`` out of it)."""

    _MASK = (1 << 64) - 1

    def __init__(self, seed: int) -> None:
        self._state = seed & self._MASK

    def _next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & self._MASK
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self._MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self._MASK
        return z ^ (z >> 31)

    def random(self) -> float:
        """A float in [0, 1)."""
        return (self._next() >> 11) / float(1 << 53)

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def below(self, n: int) -> int:
        return self._next() % n

    def choice(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def shuffled(self, items: Sequence[T]) -> list[T]:
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out


@dataclass(frozen=True)
class Episode:
    """One fault of the plan: injected at ``inject_at``, healed at ``heal_at`` (seconds from
    the run's start), on ``target`` (a host, or the node of a cluster-wide fault)."""

    index: int
    kind: str
    target: str
    inject_at: float
    heal_at: float
    waited: float = 0.0  # beyond the drawn gap, because the rules made it wait
    rate: str = ""  # slow-*: tc's rate

    @property
    def on_host(self) -> bool:
        return self.kind in HOST_KINDS

    def inject(self) -> tuple[str, ...]:
        """The fault as ``kumo lab fault`` words."""
        match self.kind:
            case "cut-public" | "cut-storage":
                return ("cut", self.target, self.kind.removeprefix("cut-"))
            case "slow-public" | "slow-storage":
                return ("slow", self.target, self.kind.removeprefix("slow-"), self.rate)
            case "kill-etcd" | "kill-leader" | "router-down" | "nas-down":
                return (self.kind,)
        return (self.kind, self.target)

    def heal(self) -> tuple[str, ...]:
        return ("heal", self.target)

    def describe(self) -> str:
        return " ".join(self.inject())


@dataclass(frozen=True)
class ChaosPlan:
    seed: int
    hosts: tuple[str, ...]
    episodes: tuple[Episode, ...]
    settle: float

    def timeline(self) -> list[tuple[float, str, Episode]]:
        """Every inject and heal in time order (``"inject"``/``"heal"``); at one instant a
        heal comes first."""
        events = [(e.inject_at, "inject", e) for e in self.episodes]
        events += [(e.heal_at, "heal", e) for e in self.episodes]
        return sorted(events, key=lambda ev: (ev[0], ev[1] != "heal", ev[2].index))

    @property
    def last_heal(self) -> float:
        return max((e.heal_at for e in self.episodes), default=0.0)


def _check(name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ChaosError(f"{name}: {allowed}")


def check_params(
    faults: int, min_gap: float, max_gap: float, min_hold: float, max_hold: float, settle: float
) -> None:
    """:class:`ChaosError` naming the first bad parameter (before anything is touched)."""
    _check("faults", faults >= 1, f"{faults} is not a positive whole number of faults")
    _check("min-gap", min_gap >= 0, f"{min_gap} is negative")
    _check("max-gap", max_gap >= min_gap, f"{max_gap} is below min-gap {min_gap}")
    _check("min-hold", min_hold > 0, f"{min_hold} is not a positive number of seconds")
    _check("max-hold", max_hold >= min_hold, f"{max_hold} is below min-hold {min_hold}")
    _check("settle", settle >= 0, f"{settle} is negative")


def make_plan(
    seed: int,
    faults: int,
    hosts: Sequence[str],
    *,
    min_gap: float = 5.0,
    max_gap: float = 20.0,
    min_hold: float = 5.0,
    max_hold: float = 30.0,
    settle: float = 15.0,
) -> ChaosPlan:
    """The faults of a run with ``seed`` (see the module's rules); :class:`ChaosError`
    names a bad parameter."""
    check_params(faults, min_gap, max_gap, min_hold, max_hold, settle)
    _check(
        "hosts",
        len(hosts) >= MIN_HEALTHY + 1 and len(set(hosts)) == len(hosts),
        f"a chaos run needs at least {MIN_HEALTHY + 1} distinct hosts (got {len(hosts)})",
    )
    rng = Rng(seed)
    names = tuple(hosts)
    healthy_at = dict.fromkeys(names, float("-inf"))  # when each host is healthy again
    cluster_free_at = float("-inf")
    bag: list[str] = []
    t = 0.0
    episodes = []
    for i in range(faults):
        if not bag:
            bag = rng.shuffled(KINDS)
        kind = bag.pop()
        gap = min(max_gap, max(min_gap, round(rng.uniform(min_gap, max_gap), 1)))
        hold = min(max_hold, max(min_hold, round(rng.uniform(min_hold, max_hold), 1)))
        want = round(t + gap, 1)
        rate = ""
        if kind in HOST_KINDS:
            start = _host_slot(healthy_at, want)
            target = rng.choice(sorted(h for h in names if healthy_at[h] <= start))
            if kind.startswith("slow-"):
                rate = rng.choice(SLOW_RATES)
        else:
            start = max(want, cluster_free_at)
            target = _NODE[kind]
        heal_at = round(start + hold, 1)
        if kind in HOST_KINDS:
            healthy_at[target] = heal_at + settle
        else:
            cluster_free_at = heal_at + settle
        episodes.append(Episode(i + 1, kind, target, start, heal_at, round(start - want, 1), rate))
        t = start
    return ChaosPlan(seed, names, tuple(episodes), settle)


def _host_slot(healthy_at: Mapping[str, float], want: float) -> float:
    """The first instant from ``want`` on when one more host may fail and ``MIN_HEALTHY``
    stay healthy."""
    n = len(healthy_at)
    for s in sorted({want, *(v for v in healthy_at.values() if v > want)}):
        if sum(v <= s for v in healthy_at.values()) - 1 >= MIN_HEALTHY and n > MIN_HEALTHY:
            return s
    raise AssertionError("unreachable: every host is healthy after the last heal")


# -- what the samples say ---------------------------------------------------------------------

# (asked, answered, the domains a host runs): libvirt's list was true at some instant
# between the two wall-clock times (a busy libvirtd answers hundreds of ms late)
Sample = tuple[float, float, frozenset[str]]


@dataclass(frozen=True)
class Beat:
    """One heartbeat line of a guest, as a host's serial console log showed it."""

    seen_at: float
    host: str
    vm: str
    boot: str
    n: int


@dataclass(frozen=True)
class DoubleRun:
    vm: str
    evidence: str  # "domains" (libvirt's lists) or "heartbeat" (the serial consoles)
    first: str  # who ran it (a host, or "host boot=<id>")
    second: str
    start: float
    end: float

    def describe(self) -> str:
        return f"{self.vm} on {self.first} and {self.second} ({self.evidence})"


Span = tuple[float, float]


def _doubles(
    vm: str,
    evidence: str,
    spans: Mapping[str, Sequence[Span]],
    seen: Mapping[str, Sequence[Span]],
) -> list[DoubleRun]:
    """``spans``: for each runner of ``vm``, the stretches it surely ran it throughout;
    ``seen``: for each runner, the windows it was seen running it in, at some instant of each
    (in order, not overlapping). Another runner's window wholly inside a runner's stretch is
    a double run; windows of one pair less than 5 s apart make one."""
    hits: dict[tuple[str, str], list[float]] = {}
    for a, stretches in spans.items():
        for t0, t1 in stretches:
            for b, windows in seen.items():
                if b == a:
                    continue
                k = bisect.bisect_right(windows, (t0, math.inf))  # the first to start after t0
                if k < len(windows) and windows[k][1] < t1:
                    hits.setdefault((min(a, b), max(a, b)), []).append(windows[k][1])
    found = []
    for (a, b), times in sorted(hits.items()):
        times.sort()
        start = prev = times[0]
        for t in times[1:]:
            if t - prev > 5.0:
                found.append(DoubleRun(vm, evidence, a, b, start, prev))
                start = t
            prev = t
        found.append(DoubleRun(vm, evidence, a, b, start, prev))
    return found


def domain_doubles(
    samples: Mapping[str, Sequence[Sample]], max_gap: float = 1.0
) -> list[DoubleRun]:
    """VMs two hosts ran at one instant, from each host's samples of its running domains.
    Two consecutive samples of a host both showing the VM (at most ``max_gap`` apart) say the
    host ran it from the first's answer to the second's asking; another host's sample showing
    it, asked and answered in between, is a double run. A live migration's switch-over is
    not one: the source is paused before the target runs, and not seen running again; nor is
    a slow answer: only the window a sample was taken in is trusted, not its last instant
    (the 100-fault run of 2026-11-28 saw a source's late answer 'overlap' its target's)."""
    spans: dict[str, dict[str, list[Span]]] = {}
    seen: dict[str, dict[str, list[Span]]] = {}
    for host, rows in samples.items():
        ordered = sorted(rows, key=lambda s: s[0])
        for asked, answered, names in ordered:
            for vm in names:
                seen.setdefault(vm, {}).setdefault(host, []).append((asked, answered))
        for (q0, a0, names0), (q1, a1, names1) in itertools.pairwise(ordered):
            if a1 - q0 <= max_gap and a0 < q1:
                for vm in names0 & names1:
                    spans.setdefault(vm, {}).setdefault(host, []).append((a0, q1))
    found = []
    for vm in sorted(spans):
        found += _doubles(vm, "domains", spans[vm], seen[vm])
    return found


def heartbeat_doubles(beats: Sequence[Beat], max_gap: float = 2.5) -> list[DoubleRun]:
    """VMs heard from two runners at once. A runner is a host and a boot id; two heartbeats
    of one runner at most ``max_gap`` apart (the guest prints one a second) say it ran in
    between; another runner's heartbeat strictly in between is a double run: two boots at
    once, or one boot on two hosts. A live migration hands the boot over: the source falls
    silent before the target speaks."""
    seen: dict[str, dict[str, list[float]]] = {}
    for b in beats:
        seen.setdefault(b.vm, {}).setdefault(f"{b.host} boot={b.boot}", []).append(b.seen_at)
    found = []
    for vm in sorted(seen):
        runners = {k: sorted(v) for k, v in seen[vm].items()}
        spans = {
            k: [(t0, t1) for t0, t1 in itertools.pairwise(v) if t1 - t0 <= max_gap]
            for k, v in runners.items()
        }
        found += _doubles(
            vm, "heartbeat", spans, {k: [(t, t) for t in v] for k, v in runners.items()}
        )
    return found


@dataclass(frozen=True)
class Outage:
    """A VM's heartbeat silent longer than the silence allowed: from its last line before
    (or the run's start) to its first line after (None: never heard again)."""

    vm: str
    start: float
    end: float | None

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


def outages(
    beats: Sequence[Beat], vms: Sequence[str], start: float, end: float, silence: float = 3.0
) -> list[Outage]:
    """Every stretch in [start, end] in which a VM printed no heartbeat for over ``silence``
    seconds, on any host."""
    found = []
    for vm in vms:
        times = sorted(b.seen_at for b in beats if b.vm == vm and start <= b.seen_at <= end)
        prev = start
        for t in times:
            if t - prev > silence:
                found.append(Outage(vm, prev, t))
            prev = t
        if end - prev > silence:
            found.append(Outage(vm, prev, None))
    return sorted(found, key=lambda o: (o.start, o.vm))


@dataclass(frozen=True)
class Injected:
    """What the runner did with an episode: when (wall clock) and what went wrong."""

    episode: Episode
    injected_at: float
    healed_at: float | None
    error: str = ""


@dataclass(frozen=True)
class Recovery:
    """The outages a fault caused (those that began while it was the newest fault, up to 1.5 s
    before it was seen: a heartbeat a second) and how long after the fault the last ended."""

    injected: Injected
    outages: tuple[Outage, ...]

    @property
    def seconds(self) -> float | None:
        ends = [o.end for o in self.outages]
        if not ends or any(e is None for e in ends):
            return None
        return max(e for e in ends if e is not None) - self.injected.injected_at


SLACK_S = 1.5


def recoveries(done: Sequence[Injected], found: Sequence[Outage]) -> list[Recovery]:
    """Each outage laid at the door of the newest fault injected before it began (with
    ``SLACK_S``: its last heartbeat may precede the fault by a second)."""
    order = sorted(done, key=lambda d: d.injected_at)
    starts = [d.injected_at for d in order]
    mine: dict[int, list[Outage]] = {d.episode.index: [] for d in order}
    for o in found:
        k = bisect.bisect_right(starts, o.start + SLACK_S) - 1
        if k >= 0:
            mine[order[k].episode.index].append(o)
    return [Recovery(d, tuple(mine[d.episode.index])) for d in done]


@dataclass(frozen=True)
class Report:
    """A chaos run's outcome; ``ok`` is the issue's target."""

    seed: int
    hosts: tuple[str, ...]
    vms: tuple[str, ...]
    started_at: float
    recoveries: tuple[Recovery, ...]
    double_runs: tuple[DoubleRun, ...]
    outages: tuple[Outage, ...]
    vms_not_running: dict[str, str]  # VM -> its state at the end
    tasks_not_ended: tuple[str, ...]  # "id kind target state"
    last_heal_at: float
    settled_s: float | None  # from the last heal to every HA VM running and heard again
    params: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)  # host -> domain samples taken

    @property
    def ok(self) -> bool:
        return (
            not self.double_runs
            and not self.vms_not_running
            and not self.tasks_not_ended
            and self.settled_s is not None
            and self.settled_s <= 60
            and not any(r.injected.error for r in self.recoveries)
        )

    def to_json(self) -> dict[str, Any]:
        rel = self.started_at

        def t(x: float | None) -> float | None:
            return None if x is None else round(x - rel, 2)

        return {
            "seed": self.seed,
            "hosts": list(self.hosts),
            "vms": list(self.vms),
            "params": self.params,
            "ok": self.ok,
            "faults": [
                {
                    "index": r.injected.episode.index,
                    "fault": r.injected.episode.describe(),
                    "planned_at_s": r.injected.episode.inject_at,
                    "injected_at_s": t(r.injected.injected_at),
                    "healed_at_s": t(r.injected.healed_at),
                    "error": r.injected.error,
                    "outages": [o.vm for o in r.outages],
                    "recovery_s": None if r.seconds is None else round(r.seconds, 2),
                }
                for r in self.recoveries
            ],
            "double_runs": [
                {
                    "vm": d.vm,
                    "evidence": d.evidence,
                    "runners": [d.first, d.second],
                    "from_s": t(d.start),
                    "to_s": t(d.end),
                }
                for d in self.double_runs
            ],
            "outages": [
                {
                    "vm": o.vm,
                    "from_s": t(o.start),
                    "to_s": t(o.end),
                    "seconds": None if o.seconds is None else round(o.seconds, 2),
                }
                for o in self.outages
            ],
            "vms_not_running": self.vms_not_running,
            "tasks_not_ended": list(self.tasks_not_ended),
            "last_heal_at_s": t(self.last_heal_at),
            "settled_s": None if self.settled_s is None else round(self.settled_s, 2),
            "samples": self.samples,
        }
