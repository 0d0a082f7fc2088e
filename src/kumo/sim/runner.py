"""Run a scenario (kumo.sim.scenario) in a ``World`` and judge it (docs/simulator.md).

Setup: a world of the scenario's hosts with two server replicas; each VM is placed through
the service's real placement (``Placer.place_and_commit``, pinned to its listed host, the pin
cleared at once so HA, maintenance and the scheduler may move it later) with its HA policy,
then the world steps until every VM runs on its host (or is stopped, as listed). **t=0 is
then**: the log starts afresh and the world's ``origin`` is set, so every time printed or
checked is counted from there.

The run: ticks of ``settings.tick_s`` (0.5 s by default). At each tick boundary ``t``
(``t=0`` included), in this order: the world has stepped to ``t``; the runner samples what
each host's QEMU runs, each VM's and host's state as the API shows them (the service's
queries), the fenced hosts, the live hosts and the placements; it checks the invariants and
the expectations due at ``t``; then it applies the events due at ``t`` (an event between
two boundaries at the next one), in file order. An event at ``T`` therefore acts after the
sample at ``T``: ``stays_on`` up to ``T`` holds when a power-off comes at ``T``.

Boots are not sampled but recorded as they happen (``World.boots``): a crash and the restart
that follows may fall within one tick.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kumo.model.activity import Task
from kumo.model.ha import FencedHost, HAMode, HASettings, HASpec
from kumo.model.host import HostRecord
from kumo.model.vm import Nic, Placement, PlacementRules, Power, VMSpec, VMStatus
from kumo.server.service import ClusterService
from kumo.sim import scenario as sc
from kumo.sim.invariants import ACTIVE, hard_rules, tasks_unended
from kumo.sim.world import World
from kumo.store import keys
from kumo.store.activity import new_task
from kumo.store.base import Compare
from kumo.store.liveness import alive_hosts
from kumo.store.records import load_all, put

SETUP_S = 60.0  # virtual seconds the setup may take before the scenario is refused
EPS = 1e-6
DOWN_REPORTS = ("stopped", "crashed", "error")  # a host's word that the VM is not running


@dataclass(frozen=True)
class Sample:
    """What the runner saw at one tick boundary."""

    t: float
    active: dict[str, tuple[str, ...]]  # vm -> hosts whose QEMU runs it (or holds it paused)
    vm_state: dict[str, str]  # as `kumo vm show` would say
    host_state: dict[str, str]  # as `kumo host list` would say
    fenced: frozenset[str]
    alive: frozenset[str]
    status: dict[str, tuple[str, str]]  # vm -> (host, state) of its last report
    placement: dict[str, str]  # vm -> host


@dataclass(frozen=True)
class Failure:
    what: str  # "expect[3] (line 20) {...}" or "invariant one-host"
    t: float
    detail: str

    def __str__(self) -> str:
        return f"{self.what} failed at t={self.t:.3f}: {self.detail}"


@dataclass
class Result:
    scenario: sc.Scenario
    log: list[str]
    failures: list[Failure]

    @property
    def passed(self) -> bool:
        return not self.failures


class SetupFailed(RuntimeError):
    """The scenario's initial cluster could not be built (a VM that does not fit, …)."""


@dataclass
class _VMTrack:
    last_host: str | None = None
    active: tuple[str, ...] = ()
    boots: list[tuple[float, str]] = field(default_factory=list)  # (t, host)
    moves: list[float] = field(default_factory=list)


class Runner:
    def __init__(self, s: sc.Scenario, seed: int = 0) -> None:
        self.s = s
        self.world = World(
            [(h.name, h.vcpus, h.memory_mib) for h in s.hosts], replicas=2, seed=seed, strict=False
        )
        # what the API shows, read straight from the store: looking never fails nor writes
        w = self.world
        self.api = ClusterService(w.store, clock=w.clock, ids=w.ids)
        self.failures: list[Failure] = []
        self.failed: set[str] = set()
        self.track = {v.name: _VMTrack() for v in s.vms}
        self.memory = {h.name: h.memory_mib for h in s.hosts}
        self.prev: Sample | None = None
        self.seen_violations = 0
        self.seen_boots = 0

    # -- setup -------------------------------------------------------------------------
    def setup(self) -> None:
        w, s = self.world, self.s
        given = s.settings.model_dump(exclude={"tick_s"}, exclude_none=True)
        if given:
            w.store.commit([], [put(keys.HA_SETTINGS, HASettings(**given))])
        for i, v in enumerate(s.vms):
            self._create(i, v)
        end = w.clock.monotonic() + SETUP_S
        while not self._ready():
            if w.clock.monotonic() >= end:
                raise SetupFailed(f"{s.path}: setup: the VMs were not as listed {SETUP_S:g} s")
            w.step(s.settings.tick_s)
        if w.violations:
            raise SetupFailed(f"{s.path}: setup: {w.violations[0]}")
        w.origin = w.clock.monotonic()
        # wall time too counts from t=0, so the times records and events carry read as the
        # log's (a step back of the setup's length, as a wall clock set by NTP may take)
        w.clock.epoch = -w.origin
        w.log.clear()
        w.boots.clear()

    def _create(self, i: int, v: sc.VMDef) -> None:
        svc = self.world.service
        now = svc.clock.now()
        task = new_task("vm.create", f"vm/{v.name}", "sim", now, ids=svc.ids)
        spec = VMSpec(
            name=v.name,
            uuid=f"00000000-0000-4000-8000-{i:012x}",
            vcpus=v.vcpus,
            memory_mib=v.memory_mib,
            disk_gib=1,
            image="img",
            pool="shared",
            nics=(Nic(network="public", mac=f"52:54:00:00:{i // 256:02x}:{i % 256:02x}"),),
            placement=PlacementRules(
                host=v.host, affinity=v.affinity, anti_affinity=v.anti_affinity
            ),
            ha=HASpec(
                mode=HAMode(v.ha),
                priority=v.priority,
                hosts=v.hosts,
                preferred=v.preferred,
                failback=v.failback,
            ),
            power=Power.RUNNING if v.state == "running" else Power.STOPPED,
            task=task.id,
            created_at=now,
        )
        try:
            _, spec = svc.placement.place_and_commit(
                spec,
                [Compare(keys.VMS + v.name, 0)],
                [put(keys.TASKS + task.id, task)],
                "sim",
                on_lost=lambda: None,
                new=True,
            )
        except Exception as exc:  # a Conflict from the scheduler: the VM does not fit
            raise SetupFailed(f"{self.s.path}: setup: vms[{i}] {v.name}: {exc}") from None
        # the pin only chose the first host: unpinned, HA and maintenance may move it
        entry = svc.store.get(keys.VMS + v.name)
        assert entry is not None
        unpinned = spec.model_copy(
            update={"placement": spec.placement.model_copy(update={"host": None})}
        )
        svc.store.commit([Compare(entry.key, entry.mod_revision)], [put(entry.key, unpinned)])

    def _ready(self) -> bool:
        w = self.world
        if w.leader() is None:
            return False
        views = {v.name: v for v in self.api.vms()}
        for v in self.s.vms:
            view = views.get(v.name)
            if view is None or view.host is None:
                return False
            if v.host is not None and view.host != v.host:
                return False
            on = w.running_on(v.name)
            if v.state == "running" and (on != [view.host] or view.state != "running"):
                return False
            if v.state == "stopped" and (on or view.state != "stopped"):
                return False
        return all(t.state.done for t in self._tasks())

    def _tasks(self) -> list[Task]:
        return [t for t, _ in load_all(self.world.store, Task, keys.TASKS).values()]

    # -- the run -----------------------------------------------------------------------
    def run(self) -> Result:
        s, w = self.s, self.world
        try:
            self.setup()
        except SetupFailed as exc:
            return Result(s, list(w.log), [Failure("setup", 0.0, str(exc))])
        pending = sorted(s.events, key=lambda e: (e.at, e.index))
        tick = s.settings.tick_s
        n = round(s.until / tick)
        for k in range(n + 1):
            if k:
                w.step(tick)
            t = k * tick
            self.look(t)
            while pending and pending[0].at <= t + EPS:
                self._apply(pending.pop(0), t)
        self._end(n * tick)
        return Result(s, list(w.log), self.failures)

    def _apply(self, e: sc.Event, t: float) -> None:
        try:
            self.world.apply(e.do)
        except Exception as exc:  # a command the service refused
            self.world.note(f"refused: {exc}")
            self._fail(f"events[{e.index}] (line {e.line})", t, f"{type(exc).__name__}: {exc}")

    def _fail(self, what: str, t: float, detail: str) -> None:
        if what in self.failed:
            return  # one failure per expectation or invariant: its first
        self.failed.add(what)
        self.failures.append(Failure(what, t, detail))

    # -- looking -----------------------------------------------------------------------
    def _sample(self, t: float) -> Sample:
        w = self.world
        active: dict[str, list[str]] = {}
        for name in sorted(w.hosts):
            for vm, state in w.hosts[name].hv.guests().items():
                if state in ACTIVE:
                    active.setdefault(vm, []).append(name)
        store = w.store
        fenced = frozenset(k for k in load_all(store, FencedHost, keys.FENCED))
        vm_state = {v.name: str(v.state) for v in self.api.vms()}
        host_state: dict[str, str] = {}
        for h in self.api.hosts():
            shown = str(h.state)
            if shown == "up" and h.maintenance:
                shown = h.maintenance
            host_state[h.name] = shown
        status = {
            n: (st.host, str(st.state))
            for n, (st, _) in load_all(store, VMStatus, keys.VMSTATUS).items()
        }
        placement = {n: p.host for n, (p, _) in load_all(store, Placement, keys.PLACEMENT).items()}
        return Sample(
            t,
            {vm: tuple(hs) for vm, hs in active.items()},
            vm_state,
            host_state,
            fenced,
            frozenset(alive_hosts(store)),
            status,
            placement,
        )

    def look(self, t: float) -> None:
        now = self._sample(t)
        self._boots(now)
        self._moves(now)
        self._invariants(now)
        for x in self.s.expect:
            self._expect(x, now)
        self.prev = now

    def _boots(self, now: Sample) -> None:
        """The boots since the last look; a start on a new host is checked (invariant 2)."""
        for bt, host, vm in self.world.boots[self.seen_boots :]:
            track = self.track.get(vm)
            if track is None:
                continue
            if track.last_host is not None and track.last_host != host:
                self._check_new_host(vm, track.last_host, host, bt, now)
                track.moves.append(bt)
            track.boots.append((bt, host))
            track.last_host = host
        self.seen_boots = len(self.world.boots)

    def _check_new_host(self, vm: str, old: str, new: str, t: float, now: Sample) -> None:
        before = self.prev
        if old in now.fenced or (before is not None and old in before.fenced):
            return
        if before is not None:
            host, state = before.status.get(vm, ("", ""))
            if host == old and state in DOWN_REPORTS and old in before.alive:
                return
        self._fail(
            "invariant new-host-start",
            t,
            f"vm {vm} started on {new} while {old}, where it ran last, might still run it "
            "(not fenced, and no report from its live agent that it stopped)",
        )

    def _moves(self, now: Sample) -> None:
        for vm, track in self.track.items():
            hosts = now.active.get(vm, ())
            if len(hosts) == 1 and track.last_host not in (None, hosts[0]):
                track.moves.append(now.t)  # a live migration: no boot
            if len(hosts) == 1:
                track.last_host = hosts[0]
            track.active = hosts

    def _invariants(self, now: Sample) -> None:
        w = self.world
        for v in w.violations[self.seen_violations :]:
            self._fail(f"invariant {v.invariant}", v.t, v.detail)
        self.seen_violations = len(w.violations)
        before = self.prev.placement if self.prev else {}
        changed = {vm for vm, h in now.placement.items() if before.get(vm) != h}
        if changed:
            specs = {n: sp for n, (sp, _) in load_all(w.store, VMSpec, keys.VMS).items()}
            hosts = {n: r for n, (r, _) in load_all(w.store, HostRecord, keys.HOSTS).items()}
            memory = {n: r.memory_mib for n, r in hosts.items()}
            for v in hard_rules(now.t, now.placement, specs, memory, changed):
                self._fail(f"invariant {v.invariant}", v.t, v.detail)

    def _end(self, t: float) -> None:
        for v in tasks_unended(t, self._tasks()):
            self._fail(f"invariant {v.invariant}", v.t, v.detail)
        for x in self.s.expect:  # a window that the run never reached (cannot happen)
            c = x.check
            if isinstance(c, sc._Window) and c.end > t + EPS:
                self._fail(str(x), t, "the run ended before the window did")

    # -- expectations -----------------------------------------------------------------
    def _expect(self, x: sc.Expect, now: Sample) -> None:
        c, t = x.check, now.t
        if isinstance(c, sc._At):
            if self.prev is not None and self.prev.t >= c.at - EPS:
                return  # checked already
            if t < c.at - EPS:
                return
            problem = self._at(c, now)
        else:
            assert isinstance(c, sc._Window)
            if not c.start - EPS <= t <= c.end + EPS:
                return
            problem = self._window(c, now)
        if problem:
            self._fail(str(x), t, problem)

    def _at(self, c: sc._At, now: Sample) -> str:
        match c:
            case sc.RunningOn(vm=vm, running_on=hosts):
                on = now.active.get(vm, ())
                if not on or not set(on) <= set(hosts):
                    return f"vm {vm} runs on {_names(on)}, not on one of {', '.join(hosts)}"
            case sc.VMStateIs(vm=vm, state=state):
                seen = now.vm_state.get(vm, "absent")
                if seen != state:
                    return f"vm {vm} is {seen}, not {state}"
            case sc.HostFenced(host=host, fenced=fenced):
                if (host in now.fenced) != fenced:
                    return f"host {host} is {'' if host in now.fenced else 'not '}fenced"
            case sc.HostStateIs(host=host, state=state):
                seen = now.host_state.get(host, "absent")
                if seen != state:
                    return f"host {host} is {seen}, not {state}"
            case sc.Apart(vms=vms, apart=apart):
                where = {vm: now.active.get(vm, ()) for vm in vms}
                desc = ", ".join(f"{vm} on {_names(h)}" for vm, h in where.items())
                if any(len(h) != 1 for h in where.values()):
                    return f"not every VM runs on one host: {desc}"
                distinct = len({h[0] for h in where.values()})
                if apart and distinct != len(vms):
                    return f"two share a host: {desc}"
                if not apart and distinct != 1:
                    return f"they are not together: {desc}"
        return ""

    def _window(self, c: sc._Window, now: Sample) -> str:
        def track_boots(vm: str) -> list[tuple[float, str]]:
            """The VM's boots in the window so far (one at its start is before it)."""
            return [(bt, h) for bt, h in self.track[vm].boots if c.start + EPS < bt <= now.t + EPS]

        match c:
            case sc.StaysOn(vm=vm, stays_on=host):
                on = now.active.get(vm, ())
                if on != (host,):
                    return f"vm {vm} runs on {_names(on)}, not on {host}"
                booted = [bt for bt, _ in track_boots(vm)]
                if booted:
                    return f"vm {vm} booted again at t={booted[0]:.3f}"
            case sc.NeverOn(vm=vm, never_on=hosts):
                seen = [h for h in now.active.get(vm, ()) if h in hosts]
                seen += [h for _, h in track_boots(vm) if h in hosts]
                if seen:
                    return f"vm {vm} runs on {seen[0]}"
            case sc.MaxRestarts(vm=vm, max_restarts=most):
                n = len(track_boots(vm))
                if n > most:
                    return f"vm {vm} booted {n} times (at most {most})"
            case sc.MaxMoves(vm=vm, max_moves=most):
                n = len([m for m in self.track[vm].moves if c.start + EPS < m <= now.t + EPS])
                if n > most:
                    return f"vm {vm} changed host {n} times (at most {most})"
        return ""


def _names(hosts: Iterable[str]) -> str:
    return ", ".join(hosts) or "no host"


def run(s: sc.Scenario, seed: int = 0) -> Result:
    """Run ``s``; the result's failures name each broken expectation or invariant and when."""
    return Runner(s, seed).run()
