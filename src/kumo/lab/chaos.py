"""``kumo lab chaos``: random faults from the lab's catalogue on a running lab, while every
host's running domains and every guest's heartbeat are sampled, then a report (docs/lab.md,
"Chaos"). The plan and the judgement are pure (kumo.chaos); this module applies the plan to
the lab and gathers the evidence.

The run makes its own HA VMs (``chaos1``…) through the ``kumo`` CLI and deletes them at the
end; it starts a second ``kumo server`` replica when only one runs (so that ``kill-leader``
has a standby to take over) and stops it at the end. Whatever happens, also on Ctrl-C or
SIGTERM, it heals every node, puts the control plane back and deletes its VMs before it
returns or raises.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import httpx
from rich.table import Table

from kumo import chaos
from kumo.lab import control_plane
from kumo.lab import lab as lab_mod
from kumo.lab.heartbeats import HeartbeatTail
from kumo.lab.plan import LabPlan, LabPlanError
from kumo.lab.sampler import RunningSampler
from kumo.lab.shell import LabError

DONE_TASKS = ("succeeded", "failed", "cancelled")
VM_PREFIX = "chaos"


@dataclass(frozen=True)
class Options:
    faults: int
    seed: int
    vms: int = 6
    min_gap: float = 5.0
    max_gap: float = 20.0
    min_hold: float = 5.0
    max_hold: float = 30.0
    settle: float = 15.0
    deadline: float = 300.0  # for the VMs to boot at the start and to run again at the end


class ChaosInterrupted(BaseException):
    """SIGTERM during a run (Ctrl-C raises KeyboardInterrupt); the lab was healed. Not an
    ``Exception``: the run's ``except Exception`` around each fault must not swallow it."""


def _kumo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "kumo", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise LabError(
            f"chaos: `kumo {' '.join(args)}` exited {proc.returncode}: "
            f"{proc.stdout[-1000:]}{proc.stderr[-1000:]}"
        )
    return proc


class _Api:
    """The API as the CLI reaches it (``client.json``); None for an answer it could not get
    (a chaos run kills the server and etcd: the caller asks again)."""

    def __init__(self) -> None:
        cfg = json.loads(control_plane.CLIENT_CONFIG.read_text())
        self.http = httpx.Client(
            base_url=cfg["url"] + "/api/v1",
            headers={"Authorization": f"Bearer {cfg['token']}"},
            timeout=10,
        )

    def get(self, path: str, **params: Any) -> list[dict[str, Any]] | None:
        try:
            r = self.http.get(path, params=params)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        body = r.json()
        return body if isinstance(body, list) else None

    def close(self) -> None:
        self.http.close()


def _wait(what: str, cond: Callable[[], bool], timeout: float, period: float = 0.5) -> float:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise LabError(f"chaos: {what} not within {timeout:.0f} s")
        time.sleep(period)
    return time.time()


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the run as Ctrl-C does (through the ``finally`` that heals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise ChaosInterrupted("chaos: SIGTERM")

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def _uninterruptible(log: Callable[[str], None]) -> Iterator[None]:
    """While cleaning up, Ctrl-C and SIGTERM only say that the clean-up goes on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log("chaos: cleaning up (healing the lab, deleting the chaos VMs); please wait")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(opts: Options, log: Callable[[str], None] = print) -> chaos.Report:
    """One chaos run on the running lab; the lab is left healed and without the run's VMs."""
    if opts.vms < 1:
        raise LabPlanError(f"vms: {opts.vms} is not a positive whole number of VMs")
    o = opts
    try:
        chaos.check_params(o.faults, o.min_gap, o.max_gap, o.min_hold, o.max_hold, o.settle)
    except chaos.ChaosError as exc:
        raise LabPlanError(str(exc)) from None
    lab = lab_mod.current_plan()
    plan = plan_for(opts, tuple(h.name for h in lab.hosts))
    names = [f"{VM_PREFIX}{i}" for i in range(1, opts.vms + 1)]
    api = _Api()
    listed = api.get("/vms")
    if listed is None:
        raise LabError("chaos: the kumo API does not answer; is the lab healthy (kumo lab status)?")
    taken = sorted({v["name"] for v in listed} & set(names))
    if taken:
        raise LabPlanError(
            f"vms: {', '.join(taken)} exist already (left by an interrupted run?); "
            f"delete them first: kumo vm delete NAME --wait"
        )
    run_ = _Run(lab, plan, opts, names, api, log)
    try:
        with _sigterm_interrupts():
            try:
                run_.execute()
            finally:
                with _uninterruptible(log):
                    run_.clean_up()
    finally:
        api.close()
    return run_.report()


def plan_for(opts: Options, hosts: tuple[str, ...]) -> chaos.ChaosPlan:
    """The run's faults for these hosts (:class:`LabPlanError` naming a bad parameter)."""
    try:
        return chaos.make_plan(
            opts.seed,
            opts.faults,
            hosts,
            min_gap=opts.min_gap,
            max_gap=opts.max_gap,
            min_hold=opts.min_hold,
            max_hold=opts.max_hold,
            settle=opts.settle,
        )
    except chaos.ChaosError as exc:
        raise LabPlanError(str(exc)) from None


def plan_table(plan: chaos.ChaosPlan) -> Table:
    """The plan before it runs (``kumo lab chaos --show-plan``)."""
    table = Table(title=f"chaos plan, seed {plan.seed}, hosts {', '.join(plan.hosts)}")
    for col in ("#", "at s", "fault", "heal at s", "heal", "waited s"):
        table.add_column(col)
    for e in plan.episodes:
        table.add_row(
            str(e.index),
            f"{e.inject_at:.1f}",
            e.describe(),
            f"{e.heal_at:.1f}",
            " ".join(e.heal()),
            f"{e.waited:.1f}" if e.waited else "",
        )
    return table


class _Run:
    def __init__(
        self,
        lab: LabPlan,
        plan: chaos.ChaosPlan,
        opts: Options,
        names: list[str],
        api: _Api,
        log: Callable[[str], None],
    ) -> None:
        self.lab, self.plan, self.opts, self.names, self.api, self.log = (
            lab,
            plan,
            opts,
            names,
            api,
            log,
        )
        self.heart = HeartbeatTail(lab, names)
        self.sampler = RunningSampler(lab)
        self.created: list[str] = []
        self.started_replica = False
        self.done: list[chaos.Injected] = []
        self.t0 = time.time()
        self.last_heal = 0.0
        self.ended_at = 0.0
        self.settled_s: float | None = None
        self.not_running: dict[str, str] = {}
        self.pending_tasks: tuple[str, ...] = ()

    # -- the run ----------------------------------------------------------------------------

    def execute(self) -> None:
        self.heart.start()
        for name in self.names:
            _kumo("vm", "create", name, "--image", "testguest", "--memory", "128")
            self.created.append(name)
        self.log(f"chaos: {len(self.names)} HA VMs created; waiting for their heartbeats")
        _wait(
            "every chaos VM's first heartbeat",
            lambda: all(self.heart.heard_since(n, 0) for n in self.names),
            self.opts.deadline,
        )
        if len(control_plane.server_replicas(self.lab)) < 2:
            control_plane.start_server(self.lab, replica=2)
            self.started_replica = True
            self.log("chaos: a second kumo server replica started (a standby for kill-leader)")
        self.sampler.start()
        _wait("samples from every host", lambda: all(self.sampler.samples.values()), 60)
        self.t0 = time.time()
        self._faults()
        # every fault was healed by its own heal: this only catches one that failed
        for said in lab_mod.heal_all(self.lab):
            if not said.endswith("nothing to heal"):
                self.log(f"chaos: left after the faults, healed now: {said}")
                self.last_heal = time.time()
        self._settle()
        time.sleep(2)  # a last look at every host and console
        self.ended_at = time.time()

    def _faults(self) -> None:
        start = time.monotonic()
        offset = 0.0  # time spent in the lab's commands: the plan's intervals come after them
        injected: dict[int, tuple[float, str]] = {}
        for at, action, ep in self.plan.timeline():
            delay = start + at + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            began = time.monotonic()
            words = ep.inject() if action == "inject" else ep.heal()
            now = time.time()
            try:
                said, error = lab_mod.fault(words[0], list(words[1:])), ""
            except Exception as exc:  # noted in the report; the run goes on, its heal too
                said, error = f"FAILED: {exc}", f"{type(exc).__name__}: {exc}"
            self.log(
                f"{now - self.t0:7.1f} s  {action:<6} #{ep.index}: "
                f"kumo lab fault {' '.join(words)}: {said}"
            )
            if action == "inject":
                injected[ep.index] = (now, error)
            else:  # healed once the heal is done (a host powering on takes seconds)
                at_, err = injected.pop(ep.index)
                self.last_heal = time.time()
                self.done.append(
                    chaos.Injected(ep, at_, self.last_heal, "; ".join(filter(None, [err, error])))
                )
            offset += time.monotonic() - began

    def _settle(self) -> None:
        """Until every chaos VM runs and was heard since the last heal (``settled_s``), then
        until no task is left unended; both within the deadline, reported if not."""
        deadline = time.monotonic() + self.opts.deadline
        vms: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            vms = [v for v in self.api.get("/vms") or [] if v["name"] in self.names]
            running = {v["name"] for v in vms if v["state"] == "running"}
            heard = {n for n in self.names if self.heart.heard_since(n, self.last_heal)}
            if running >= set(self.names) and heard >= set(self.names):
                self.settled_s = time.time() - self.last_heal
                self.log(f"chaos: every chaos VM runs {self.settled_s:.1f} s after the last heal")
                break
            time.sleep(0.5)
        while time.monotonic() < deadline and self._pending():
            time.sleep(1)
        vms = [v for v in self.api.get("/vms") or [] if v["name"] in self.names]
        state = {v["name"]: str(v["state"]) for v in vms}
        self.not_running = {n: state.get(n, "missing") for n in self.names}
        self.not_running = {n: s for n, s in self.not_running.items() if s != "running"}
        self.pending_tasks = tuple(self._pending())

    def _pending(self) -> list[str]:
        tasks = self.api.get("/tasks", limit=1000)
        if tasks is None:
            return ["(the API did not answer: tasks unknown)"]
        return [
            f"{t['id']} {t['kind']} {t['target']} {t['state']}"
            for t in tasks
            if t["state"] not in DONE_TASKS
        ]

    # -- always ------------------------------------------------------------------------------

    def clean_up(self) -> None:
        self.sampler.stop()
        self.heart.stop()
        if not self.ended_at:
            self.ended_at = time.time()
        for step, what in (
            ("heal every node", lambda: lab_mod.heal_all(self.lab)),
            ("put the kumo servers back", self._servers_back),
            ("delete the chaos VMs", self._delete_vms),
        ):
            try:
                what()
            except Exception as exc:  # each step is tried, whatever the one before did
                self.log(f"chaos: clean-up could not {step}: {exc}")

    def _servers_back(self) -> None:
        if 1 not in control_plane.server_replicas(self.lab):
            control_plane.start_server(self.lab, replica=1)
        if self.started_replica:
            control_plane.stop_server(self.lab, 2)

    def _delete_vms(self) -> None:
        try:  # a VM's host must be back for its domain to go; try anyway after the wait
            control_plane.wait_hosts(self.lab, control_plane.TOKEN_FILE.read_text().strip(), 120)
        except (LabError, httpx.HTTPError) as exc:
            self.log(f"chaos: not every host is back ({exc}); deleting the VMs all the same")
        failed = []
        for name in self.created:
            try:
                _kumo("vm", "delete", name, "--wait", timeout=180)
            except (LabError, subprocess.TimeoutExpired) as exc:
                failed.append(f"{name}: {exc}")
        if failed:
            raise LabError("; ".join(failed))

    # -- the judgement -----------------------------------------------------------------------

    def report(self) -> chaos.Report:
        beats = list(self.heart.beats)
        gaps = chaos.outages(beats, self.names, self.t0, self.ended_at)
        doubles = chaos.domain_doubles(self.sampler.windows) + chaos.heartbeat_doubles(beats)
        o = self.opts
        return chaos.Report(
            seed=o.seed,
            hosts=self.plan.hosts,
            vms=tuple(self.names),
            started_at=self.t0,
            recoveries=tuple(chaos.recoveries(self.done, gaps)),
            double_runs=tuple(doubles),
            outages=tuple(gaps),
            vms_not_running=self.not_running,
            tasks_not_ended=self.pending_tasks,
            last_heal_at=self.last_heal,
            settled_s=self.settled_s,
            params={
                "faults": o.faults,
                "min_gap": o.min_gap,
                "max_gap": o.max_gap,
                "min_hold": o.min_hold,
                "max_hold": o.max_hold,
                "settle": o.settle,
            },
            samples={h: len(s) for h, s in self.sampler.samples.items()},
        )


def tables(report: chaos.Report) -> list[Table]:
    """The report for a person: the faults with their recovery, then the verdict."""
    data = report.to_json()
    faults = Table(title=f"chaos run, seed {report.seed}: {len(data['faults'])} faults")
    for col in ("#", "fault", "at s", "healed s", "VMs out", "recovery s", "error"):
        faults.add_column(col)
    for f in data["faults"]:
        faults.add_row(
            str(f["index"]),
            f["fault"],
            f"{f['injected_at_s']:.1f}",
            "" if f["healed_at_s"] is None else f"{f['healed_at_s']:.1f}",
            ", ".join(f["outages"]),
            "" if f["recovery_s"] is None else f"{f['recovery_s']:.1f}",
            f["error"][:60],
        )
    verdict = Table(title="verdict" + (" (ok)" if report.ok else " (NOT ok)"))
    verdict.add_column("measure")
    verdict.add_column("value")
    verdict.add_row("double runs", str(len(report.double_runs)))
    for d in report.double_runs[:10]:
        verdict.add_row("", d.describe())
    verdict.add_row("VMs not running at the end", _names(report.vms_not_running))
    verdict.add_row("tasks not ended", str(len(report.tasks_not_ended)))
    for t in report.tasks_not_ended[:10]:
        verdict.add_row("", t)
    settled = "never" if report.settled_s is None else f"{report.settled_s:.1f} s"
    verdict.add_row("every HA VM running after the last heal", settled)
    lost = [o for o in report.outages if o.end is None]
    verdict.add_row("heartbeat outages (never ended)", f"{len(report.outages)} ({len(lost)})")
    verdict.add_row(
        "domain samples per host", ", ".join(f"{h} {n}" for h, n in report.samples.items())
    )
    return [faults, verdict]


def _names(states: dict[str, str]) -> str:
    return ", ".join(f"{n} ({s})" for n, s in states.items()) or "none"
