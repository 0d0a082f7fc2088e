"""A host's network paths, judged from its pings (pure: no I/O; the times are passed in).

The agent pings every target of both paths once a round (every ``path_interval_s``,
agent/ping.py) and feeds the answers here. The targets: the public path's are the gateways
(routers) of the networks the host has, the storage path's the NAS addresses of the shared
pools it offers (:func:`path_targets`). Per path, the rules (tests/unit/test_paths.py):

- a round is *answered* when at least one of the path's targets answered: one NAS address
  of two still answering is a path that works;
- a path is **down** after ``path_misses`` unanswered rounds in a row, and **up** again only
  after its targets have answered for ``path_up_s`` seconds without a miss (dampening: a
  link flapping faster than that is judged down once and never up in between);
- the first judgement after the agent starts is quicker: **up** at the first answer (a
  fresh agent need not wait 5 s to say so), **down** after ``path_misses`` misses;
- a path with no target is **unknown**, and so is one not judged yet.

Only the judgement is reported (``/kumo/paths/<host>``), when it changes; the raw pings are
not. ``detail`` says what was seen when it last changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kumo.model.ha import HASettings
from kumo.model.host import HostPaths, NetPath, Network, PathState, PathStatus, Pool


@dataclass(frozen=True)
class Dampening:
    misses: int = 3  # unanswered rounds in a row before a path is down
    up_s: float = 5.0  # seconds of answers before a down path is up again

    @classmethod
    def of(cls, settings: HASettings) -> Dampening:
        return cls(misses=settings.path_misses, up_s=settings.path_up_s)


def path_targets(
    host_pools: Sequence[str],
    host_networks: Sequence[str],
    pools: Mapping[str, Pool],
    networks: Mapping[str, Network],
) -> dict[NetPath, tuple[str, ...]]:
    """What each path pings: the gateways of the host's networks (public) and the NAS
    addresses of its shared pools (storage), each address once, in order."""
    gateways = (networks[n].gateway for n in host_networks if n in networks)
    shared = (pools[p] for p in host_pools if p in pools and pools[p].kind == "shared-dir")
    nas = (a for pool in shared for a in pool.nas)
    return {
        NetPath.PUBLIC: tuple(sorted({g for g in gateways if g})),
        NetPath.STORAGE: tuple(sorted(set(nas))),
    }


def screen(
    targets: Mapping[NetPath, Sequence[str]], problems: Mapping[str, str]
) -> tuple[dict[NetPath, tuple[str, ...]], dict[NetPath, str]]:
    """The targets worth pinging (those with no problem) and, for each path that lost some,
    a note naming them and why ("203.0.113.9: not on any network of this host …")."""
    kept: dict[NetPath, tuple[str, ...]] = {}
    notes: dict[NetPath, str] = {}
    for net, addresses in targets.items():
        kept[net] = tuple(a for a in addresses if not problems.get(a))
        bad = [f"{a}: {problems[a]}" for a in addresses if problems.get(a)]
        if bad:
            notes[net] = "not pinged: " + "; ".join(bad)
    return kept, notes


def _pings(n: int) -> str:
    return f"{n} ping{'' if n == 1 else 's'} unanswered"


class PathJudge:
    """One path's dampener: fed one round of answers at a time, it keeps the judgement."""

    def __init__(self) -> None:
        self.status = PathStatus()
        self.misses = 0  # unanswered rounds in a row
        self.answering_since: float | None = None  # monotonic: first round of the answers now

    def feed(
        self,
        targets: Sequence[str],
        answers: Mapping[str, bool],
        dampening: Dampening,
        monotonic: float,
        wall: float,
        note: str = "",
    ) -> bool:
        """One round: ``answers`` (target -> it answered; a target missing counts as not)
        at ``monotonic`` (for the dampening) and ``wall`` (the ``since`` reported); ``note``
        says why configured targets are not pinged. Returns whether the judged state
        changed (the first judgement included)."""
        targets = tuple(targets)
        before = self.status.state
        if not targets:
            self.misses, self.answering_since = 0, None
            detail = note or "no address to ping"
            if (
                self.status.state != PathState.UNKNOWN
                or self.status.targets
                or self.status.detail != detail
            ):
                self.status = PathStatus(since=wall, detail=detail)
            return self.status.state != before
        if self.status.targets != targets:
            self.status = self.status.model_copy(update={"targets": targets})
        answered = [t for t in targets if answers.get(t, False)]
        if answered:
            self.misses = 0
            if self.answering_since is None:
                self.answering_since = monotonic
        else:
            self.misses += 1
            self.answering_since = None
        if self.misses >= dampening.misses and before != PathState.DOWN:
            missed = f"{', '.join(targets)}: {_pings(self.misses)}"
            self._judge(PathState.DOWN, targets, wall, missed)
        elif answered and before != PathState.UP:
            assert self.answering_since is not None
            answering = monotonic - self.answering_since
            if before == PathState.UNKNOWN:  # the first judgement: up at the first answer
                self._judge(PathState.UP, targets, wall, f"{', '.join(answered)} answering")
            elif answering >= dampening.up_s:
                self._judge(
                    PathState.UP,
                    targets,
                    wall,
                    f"{', '.join(answered)} answering for {answering:g} s",
                )
        return self.status.state != before

    def _judge(self, state: PathState, targets: tuple[str, ...], wall: float, detail: str) -> None:
        if state != self.status.state:
            self.status = PathStatus(state=state, targets=targets, since=wall, detail=detail)


class PathMonitor:
    """Both paths of a host."""

    def __init__(self) -> None:
        self.judges = {NetPath.PUBLIC: PathJudge(), NetPath.STORAGE: PathJudge()}

    def feed(
        self,
        targets: Mapping[NetPath, Sequence[str]],
        answers: Mapping[str, bool],
        dampening: Dampening,
        monotonic: float,
        wall: float,
        notes: Mapping[NetPath, str] | None = None,
    ) -> list[NetPath]:
        """One round for both paths; the paths whose judged state changed."""
        notes = notes or {}
        return [
            net
            for net, judge in self.judges.items()
            if judge.feed(
                targets.get(net, ()), answers, dampening, monotonic, wall, notes.get(net, "")
            )
        ]

    def status(self, net: NetPath) -> PathStatus:
        return self.judges[net].status

    def record(self, host: str, wall: float) -> HostPaths:
        return HostPaths(
            host=host,
            public=self.status(NetPath.PUBLIC),
            storage=self.status(NetPath.STORAGE),
            at=wall,
        )


def describe(net: NetPath, status: PathStatus, when: str) -> str:
    """The event for a path's new judgement, e.g. "public path down since 12:00:03 UTC:
    198.18.0.1: 3 pings unanswered"; ``when`` is ``status.since`` as the reader shows it."""
    if status.state == PathState.UNKNOWN:
        return f"{net} path unknown: {status.detail or 'not judged yet'}"
    return f"{net} path {status.state} since {when}: {status.detail}"
