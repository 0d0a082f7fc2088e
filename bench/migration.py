"""Benchmark: live migration of a 256 MiB guest h1 -> h2 over a storage link slowed to
80 Mbit/s (tc tbf), with the guest running the dirtier over 64 MiB (busy) and idle. Three
methods, each on a fresh VM:

- ``virsh``: plain `virsh migrate --live` with libvirt's defaults, and a 60 s timeout
  after which virsh pauses the guest to finish (``--timeout``; the forced pause is reported
  as not converged).
- ``kumo``: `kumo vm migrate --wait`: kumo measures, picks a strategy and governs the job.
- ``virsh-ac``: `virsh migrate --live` given the settings kumo chose in the ``kumo`` run of
  the same workload: ``--auto-converge`` with kumo's ``--auto-converge-initial`` and
  ``--auto-converge-increment``, and kumo's bandwidth, compression, parallel and post-copy
  settings where it used them (:func:`virsh_options`, the same mapping as
  ``hypervisor/libvirt_hv._flags_and_params``), with kumo's timeout. kumo's switch-over
  target is QEMU's default (300 ms) unless a policy changes it; then it is set with
  `virsh migrate-setmaxdowntime` once the job runs, as kumo does. What virsh cannot copy
  is the governor: kumo raises the downtime target in steps when progress stalls and aborts
  at its timeout instead of pausing the guest. So this row shows what kumo's choice of
  settings is worth on its own, and the ``kumo`` row what the measuring and governing add.

Each row: converged (no forced pause, no abort), total time (command start to end), downtime
as the guest sees it (the longest silence in replies to a ping every 20 ms from the router
namespace) beside libvirt's figure (``Total downtime`` of the completed job; none after
post-copy), and total time over the bound. The bound is the guest's non-zero memory over the
link rate; the non-zero memory comes from libvirt's count of zero ("constant") pages in the
plain virsh run of that workload: without that count the bound is not guessed, the run
fails (:class:`BoundUnknown`). Target met: converged, the guest kept its boot id, downtime by
ping <= 300 ms and total <= 1.5x the bound. A migration that corrupts the guest (its boot id
changes) fails its row.

Run as root, with the lab free (it runs `kumo lab down`, then `kumo lab up --hosts 2`, and
`kumo lab down` at the end):

    sudo .venv/bin/python -m bench.migration [--rate 80mbit] [--pages-per-s 25600]
    sudo .venv/bin/python -m bench.migration --only busy-kumo busy-virsh-ac   # some rows

It takes about 15-20 minutes (an estimate: `lab up` about a minute, then 6 rows of 2-3
minutes each: boot under TCG, 25 s for the dirtier to go round, up to about 75 s of
migration, delete). It prints one JSON line per row, then a table, and writes
bench/results/migration.json (with --only: migration-partial.json; the bound and the kumo
settings for ``virsh-ac`` then come from the last full run).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kumo.lab import control_plane
from kumo.lab import lab as lab_mod
from kumo.lab.namespaces import pids_in_netns
from kumo.lab.plan import Network
from kumo.model.migration import Strategy
from kumo.model.vm import Placement
from kumo.store import keys
from kumo.store.etcd import EtcdStore
from kumo.store.records import put

PAGE = 4096
MEMORY_MIB = 256
BOOT = re.compile(r"KUMO-GUEST boot=(\S+) n=(\d+) ")
WORKLOADS = ("busy", "idle")
METHODS = ("virsh", "kumo", "virsh-ac")  # virsh-ac after kumo: it takes kumo's settings
PLAIN_TIMEOUT_S = 60  # plain virsh: then a forced pause
QEMU_DOWNTIME_MS = 300  # QEMU's default downtime-limit
TARGET_DOWNTIME_MS = 300  # as the guest sees it
TARGET_RATIO = 1.5  # total time over the bound


class BoundUnknown(RuntimeError):
    """libvirt gave no zero-page count, so the bound cannot be computed honestly."""


def kumo(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kumo", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def console(vm: str) -> str:
    return kumo("vm", "console-log", vm, "--bytes", "6000", check=False).stdout


def wait_for(vm: str, pattern: str, timeout: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, console(vm))
        if m:
            return m
        time.sleep(1)
    raise SystemExit(f"{vm}: no {pattern!r} within {timeout:.0f} s")


class Pinger:
    """ping -D every 20 ms from the router namespace; the longest silence between replies."""

    def __init__(self, ip: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", "kumo-router", "ping", "-D", "-n", "-i", "0.02", ip],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.replies: list[float] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.match(r"\[(\d+\.\d+)\] \d+ bytes from", line)
            if m:
                self.replies.append(float(m.group(1)))

    def longest_gap_ms(self, start: float, end: float) -> float | None:
        """None: fewer than two replies in the window (the guest never answered)."""
        self.proc.terminate()
        self.proc.wait()
        self.thread.join(timeout=5)
        seen = [t for t in self.replies if start - 1 <= t <= end + 3]
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        return round(1000 * max(gaps), 0) if gaps else None


def job_stats(host: str, vm: str) -> dict[str, float]:
    """`virsh domjobinfo --completed` on ``host``: e.g. "Total downtime" (ms), "Time
    elapsed" (ms), "Constant pages" (zero pages sent as such)."""
    out = kumo("lab", "exec", host, "--", "virsh", "domjobinfo", vm, "--completed", check=False)
    stats = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(":")
        num = value.split()
        if num and re.fullmatch(r"[\d.]+", num[0]):
            stats[key.strip()] = float(num[0])
    return stats


def virsh_options(s: Strategy) -> list[str]:
    """kumo's chosen settings as `virsh migrate` options: the same flags and parameters
    ``hypervisor/libvirt_hv._flags_and_params`` gives libvirt. (virsh's bandwidths are in
    MiB/s, its xbzrle cache in bytes.)"""
    opts: list[str] = []
    if s.bandwidth_mib_s:
        opts += ["--bandwidth", str(s.bandwidth_mib_s)]
    if s.auto_converge:
        opts += [
            "--auto-converge",
            "--auto-converge-initial",
            str(s.throttle_initial),
            "--auto-converge-increment",
            str(s.throttle_increment),
        ]
    methods = [m for m, used in (("xbzrle", s.xbzrle), ("mt", s.compression)) if used]
    if s.xbzrle:
        opts += ["--comp-xbzrle-cache", str(s.xbzrle_cache_mib * 2**20)]
    if s.compression:
        opts += ["--comp-mt-level", "1", "--comp-mt-threads", "2", "--comp-mt-dthreads", "2"]
    if methods:
        opts += ["--compressed", "--comp-methods", ",".join(methods)]
    if s.parallel:
        opts += ["--parallel", "--parallel-connections", str(s.parallel)]
    if s.postcopy:
        # kumo's governor switches after the first pass, as this flag does
        opts += ["--postcopy", "--postcopy-after-precopy"]
        if s.bandwidth_mib_s:
            opts += ["--postcopy-bandwidth", str(s.bandwidth_mib_s)]
    return opts


def _set_downtime_once_running(vm: str, ms: int) -> subprocess.Popen[bytes]:
    """kumo sets the switch-over target once the job runs; `virsh migrate` has no option."""
    script = (
        f"until virsh domjobinfo {vm} | grep -q '^Job type: *Unbounded'; do sleep 0.1; done; "
        f"virsh migrate-setmaxdowntime {vm} {ms}"
    )
    return subprocess.Popen(
        [*lab_mod.exec_prefix("h1"), "sh", "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_agents(plan: Any) -> None:
    """kumo's agents must not act on the VM while virsh moves it: h1's would restart it, and
    h2's would remove the incoming domain as a stray (its VM is placed on h1 until the end)."""
    for host in plan.hosts[:2]:
        for pid in pids_in_netns(host.netns):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"kumo" in cmd and b"agent" in cmd:
                os.kill(pid, signal.SIGTERM)
        while control_plane.agent_running(host):
            time.sleep(0.1)


def virsh_migrate(
    plan: Any, vm: str, options: list[str], timeout_s: int, downtime_ms: int
) -> dict[str, Any]:
    """`virsh migrate --live` with ``options`` and a ``timeout_s`` forced pause. h1's agent
    and h2's agents are stopped meanwhile, and the placement written after (h2 if virsh
    succeeded), as kumo would."""
    target = plan.hosts[1].address(Network.STORAGE)
    _stop_agents(plan)
    setter = (
        _set_downtime_once_running(vm, downtime_ms) if downtime_ms != QEMU_DOWNTIME_MS else None
    )
    args = [
        "virsh",
        "migrate",
        "--live",
        "--p2p",
        "--persistent",
        "--undefinesource",
        "--unsafe",
        "--timeout",
        str(timeout_s),
        *options,
        vm,
        f"qemu+tcp://{target}/system",
        f"tcp://{target}",
    ]
    t0 = time.time()
    proc = kumo("lab", "exec", "h1", "--", *args, check=False)
    t1 = time.time()
    if setter is not None:
        setter.kill()
        setter.wait()
    ran_on = "h2" if proc.returncode == 0 else "h1"
    EtcdStore(plan.etcd_endpoint).commit(
        [], [put(keys.PLACEMENT + vm, Placement(host=ran_on, at=time.time()))]
    )
    for host in plan.hosts[:2]:
        control_plane.start_agent(plan, host, "qemu")
    stats = job_stats(ran_on, vm)
    elapsed_ms = stats.get("Time elapsed")
    elapsed = elapsed_ms / 1000 if elapsed_ms is not None else t1 - t0
    return {
        "start": t0,
        "end": t1,
        "ok": proc.returncode == 0,
        "forced_pause": proc.returncode == 0 and elapsed > timeout_s,
        "libvirt_downtime_ms": stats.get("Total downtime"),
        "libvirt_total_s": round(elapsed_ms / 1000, 1) if elapsed_ms is not None else None,
        "zero_pages": stats.get("Constant pages"),
        "settings": " ".join(options) or "libvirt defaults",
        "detail": proc.stderr.strip()[-200:],
    }


def kumo_migrate(vm: str, extra: list[str]) -> dict[str, Any]:
    t0 = time.time()
    proc = kumo("vm", "migrate", vm, "--to", "h2", "--wait", *extra, check=False)
    t1 = time.time()
    tasks = json.loads(kumo("task", "list", "-o", "json").stdout)
    task = next(t for t in tasks if t["kind"] == "vm.migrate" and t["target"] == f"vm/{vm}")
    m = task.get("migration") or {}
    strategy = m.get("strategy") or {}
    return {
        "start": t0,
        "end": t1,
        "ok": proc.returncode == 0,
        "forced_pause": False,  # kumo aborts at its timeout instead
        "libvirt_downtime_ms": m.get("downtime_ms"),
        "libvirt_total_s": m.get("elapsed_s"),
        "settings": strategy.get("name"),
        "strategy": strategy or None,  # what virsh-ac is given
        "detail": task["message"],
    }


def kumo_strategy(rows: list[dict[str, Any]], workload: str) -> Strategy:
    """The settings kumo chose for ``workload`` (this run, else the last full run)."""
    for r in rows:
        if r["workload"] == workload and r["method"] == "kumo" and r.get("strategy"):
            return Strategy.model_validate(r["strategy"])
    raise SystemExit(
        f"virsh-ac, {workload}: no kumo run of this workload recorded the strategy it chose "
        f"(run {workload}-kumo first, or a full run); virsh-ac takes kumo's settings"
    )


def run(
    plan: Any,
    workload: str,
    method: str,
    args: argparse.Namespace,
    known: list[dict[str, Any]],
) -> dict[str, Any]:
    vm = f"b-{workload}-{method}"
    create = ["vm", "create", vm, "--image", "testguest", "--memory", str(MEMORY_MIB)]
    # HA off: the virsh rows stop kumo's agents for the whole move, and the hosts' watchdogs
    # would (rightly) kill an HA guest whose agent is silent that long
    create += ["--host", "h1", "--ha", "off"]
    if workload == "busy":
        create += ["--runcmd", f"dirty 64 {args.pages_per_s}"]
    kumo(*create, "--wait")
    ip = wait_for(vm, r"KUMO-GUEST dhcp eth0 (\S+)").group(1)
    boot = wait_for(vm, r"KUMO-GUEST boot=(\S+) n=3 ").group(1)
    time.sleep(25)  # the dirtier has gone round its 64 MiB; background dirty-rate sample taken
    kumo("lab", "fault", "slow", "h1", "storage", args.rate)
    pinger = Pinger(ip)
    time.sleep(1)
    try:
        if method == "kumo":
            result = kumo_migrate(vm, args.kumo_option)
        elif method == "virsh":
            result = virsh_migrate(plan, vm, [], PLAIN_TIMEOUT_S, QEMU_DOWNTIME_MS)
        else:
            s = kumo_strategy(known, workload)
            result = virsh_migrate(plan, vm, virsh_options(s), int(s.timeout_s), s.downtime_ms)
    finally:
        kumo("lab", "fault", "heal", "h1")
    result["downtime_ms"] = pinger.longest_gap_ms(result["start"], result["end"])
    time.sleep(4)
    log = console(vm)
    after = BOOT.findall(log)
    result["same_boot"] = bool(after) and after[-1][0] == boot
    if not result["same_boot"]:
        result["console_tail"] = log[-3000:]
    kumo("vm", "delete", vm, "--wait", check=False)
    return {"workload": workload, "method": method, **result}


def bound_s(rows: list[dict[str, Any]], workload: str, link_bytes_s: float) -> float:
    """The guest's non-zero memory over the link rate, from libvirt's count of zero pages
    in the plain virsh run of ``workload`` (kumo's may end in post-copy, which keeps no
    statistics)."""
    plain = next((r for r in rows if r["workload"] == workload and r["method"] == "virsh"), None)
    if plain is None:
        raise BoundUnknown(
            f"bound for {workload}: no plain virsh run of this workload, here or in the last "
            f"full run; run {workload}-virsh"
        )
    zero = plain.get("zero_pages")
    if zero is None:
        raise BoundUnknown(
            f"bound for {workload}: libvirt gave no zero-page count ('Constant pages' in "
            f"`virsh domjobinfo --completed` on h2) for the plain virsh run ({plain['detail']!r}), "
            f"so the guest's non-zero memory is unknown; not assuming that no page was zero"
        )
    return round((MEMORY_MIB * 2**20 - float(zero) * PAGE) / link_bytes_s, 1)


def judge(r: dict[str, Any], bound: float) -> None:
    r["bound_s"] = bound
    r["total_s"] = round(r["end"] - r["start"], 1)
    r["ratio"] = round(r["total_s"] / bound, 2)
    r["converged"] = r["ok"] and not r["forced_pause"]
    ping = r["downtime_ms"]
    r["target_met"] = bool(
        r["converged"]
        and r["same_boot"]
        and ping is not None
        and ping <= TARGET_DOWNTIME_MS
        and r["ratio"] <= TARGET_RATIO
    )


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'method':<9} {'workload':<8} {'converged':>9} {'total s':>8} "
        f"{'downtime ms ping / libvirt':>27} {'bound s':>8} {'x bound':>8} "
        f"{'target met':>10} {'same boot':>9}  settings"
    )
    for r in rows:
        downtime = f"{_ms(r['downtime_ms'])} / {_ms(r['libvirt_downtime_ms'])}"
        print(
            f"{r['method']:<9} {r['workload']:<8} {r['converged']!s:>9} {r['total_s']:>8} "
            f"{downtime:>27} {r['bound_s']:>8} {r['ratio']:>8} {r['target_met']!s:>10} "
            f"{r['same_boot']!s:>9}  {r['settings']}"
        )
    print(
        f"target: converged, same boot, downtime by ping <= {TARGET_DOWNTIME_MS} ms and "
        f"total <= {TARGET_RATIO}x the bound (non-zero memory / link rate)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", default="80mbit")
    parser.add_argument("--pages-per-s", type=int, default=25600)
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        help="e.g. busy-kumo busy-virsh-ac: run these only (the bound and kumo's settings "
        "then come from the last full run when this one has none)",
    )
    parser.add_argument(
        "--kumo-option",
        action="append",
        default=[],
        help="extra option for kumo vm migrate, e.g. --kumo-option=--postcopy=off",
    )
    args = parser.parse_args()
    out = Path(__file__).parent / "results" / "migration.json"
    previous = json.loads(out.read_text())["rows"] if args.only and out.exists() else []
    if args.only:
        out = out.with_name("migration-partial.json")
    out.parent.mkdir(exist_ok=True)
    link = float(args.rate.removesuffix("mbit")) * 1e6 / 8  # bytes/s
    kumo("lab", "down")
    kumo("lab", "up", "--hosts", "2", timeout=900)
    plan = lab_mod.current_plan()
    rows: list[dict[str, Any]] = []
    try:
        for workload in WORKLOADS:
            for method in METHODS:
                if args.only and f"{workload}-{method}" not in args.only:
                    continue
                rows.append(run(plan, workload, method, args, rows + previous))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        kumo("lab", "down", check=False)
        # the measurements are kept even when the bound cannot be computed below
        out.write_text(json.dumps({"rate": args.rate, "rows": rows}, indent=2))
    for r in rows:
        judge(r, bound_s(rows + previous, r["workload"], link))
    print_table(rows)
    out.write_text(json.dumps({"rate": args.rate, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
