"""Benchmark: live migration of a 256 MiB guest over a storage link slowed to 80 Mbit/s (tc
tbf), plain `virsh migrate --live` with libvirt's defaults (after a 60 s timeout, a forced
pause) against `kumo vm migrate`, with the guest running the dirtier over 64 MiB and idle.

For each run: converged without a forced pause or not, total time (command start to end),
downtime, and the ratio of total time to the bound (non-zero guest memory / link rate).
Downtime is measured the same way for both: the longest silence in replies to a ping every
20 ms from the router namespace; libvirt's own figure is shown where it gives one (not after
post-copy). The guest must keep its boot id: a migration that corrupts it fails the run.

    sudo .venv/bin/python -m bench.migration [--rate 80mbit] [--pages-per-s 25600]

Writes bench/results/migration.json.
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
from kumo.model.vm import Placement
from kumo.store import keys
from kumo.store.etcd import EtcdStore
from kumo.store.records import put

PAGE = 4096
BOOT = re.compile(r"KUMO-GUEST boot=(\S+) n=(\d+) ")


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

    def longest_gap_ms(self, start: float, end: float) -> float:
        self.proc.terminate()
        self.proc.wait()
        self.thread.join(timeout=5)
        seen = [t for t in self.replies if start - 1 <= t <= end + 3]
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        return round(1000 * max(gaps), 0) if gaps else float("nan")


def job_stats(host: str, vm: str) -> dict[str, float]:
    out = kumo("lab", "exec", host, "--", "virsh", "domjobinfo", vm, "--completed", check=False)
    stats = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(":")
        num = value.split()
        if num and re.fullmatch(r"[\d.]+", num[0]):
            stats[key.strip()] = float(num[0])
    return stats


def plain_virsh(plan: Any, vm: str) -> dict[str, Any]:
    """virsh migrate --live with libvirt's defaults and its 60 s timeout (forced pause).
    h1's agent is stopped meanwhile, and the placement written after, as kumo would."""
    h1, h2 = plan.hosts[0], plan.hosts[1]
    target = h2.address(Network.STORAGE)
    for pid in pids_in_netns(h1.netns):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"kumo" in cmd and b"agent" in cmd:
            os.kill(pid, signal.SIGTERM)
    while control_plane.agent_running(h1):
        time.sleep(0.1)
    t0 = time.time()
    proc = kumo(
        "lab",
        "exec",
        "h1",
        "--",
        "virsh",
        "migrate",
        "--live",
        "--p2p",
        "--persistent",
        "--undefinesource",
        "--unsafe",
        "--timeout",
        "60",
        vm,
        f"qemu+tcp://{target}/system",
        f"tcp://{target}",
        check=False,
    )
    t1 = time.time()
    EtcdStore(plan.etcd_endpoint).commit(
        [], [put(keys.PLACEMENT + vm, Placement(host="h2", at=time.time()))]
    )
    control_plane.start_agent(plan, h1, "qemu")
    stats = job_stats("h2", vm)
    return {
        "start": t0,
        "end": t1,
        "ok": proc.returncode == 0,
        "forced_pause": "--timeout" in " ".join(proc.args) and t1 - t0 > 60,
        "libvirt_downtime_ms": stats.get("Total downtime"),
        "libvirt_total_s": stats.get("Time elapsed", 0) / 1000,
        "zero_pages": stats.get("Constant pages"),
        "strategy": "libvirt defaults",
        "detail": proc.stderr.strip()[-200:],
    }


def kumo_migrate(vm: str, extra: list[str]) -> dict[str, Any]:
    t0 = time.time()
    proc = kumo("vm", "migrate", vm, "--to", "h2", "--wait", *extra, check=False)
    t1 = time.time()
    tasks = json.loads(kumo("task", "list", "-o", "json").stdout)
    task = next(t for t in tasks if t["kind"] == "vm.migrate" and t["target"] == f"vm/{vm}")
    m = task.get("migration") or {}
    return {
        "start": t0,
        "end": t1,
        "ok": proc.returncode == 0,
        "forced_pause": False,  # kumo aborts at its timeout instead
        "libvirt_downtime_ms": m.get("downtime_ms"),
        "libvirt_total_s": m.get("elapsed_s"),
        "strategy": (m.get("strategy") or {}).get("name"),
        "detail": task["message"],
    }


def run(
    plan: Any, workload: str, method: str, rate: str, pages: int, extra: list[str]
) -> dict[str, Any]:
    vm = f"b-{workload}-{method}"
    args = ["vm", "create", vm, "--image", "testguest", "--memory", "256", "--host", "h1"]
    if workload == "busy":
        args += ["--runcmd", f"dirty 64 {pages}"]
    kumo(*args, "--wait")
    ip = wait_for(vm, r"KUMO-GUEST dhcp eth0 (\S+)").group(1)
    boot = wait_for(vm, r"KUMO-GUEST boot=(\S+) n=3 ").group(1)
    time.sleep(25)  # the dirtier has gone round its 64 MiB; background dirty-rate sample taken
    kumo("lab", "fault", "slow", "h1", "storage", rate)
    pinger = Pinger(ip)
    time.sleep(1)
    try:
        result = plain_virsh(plan, vm) if method == "virsh" else kumo_migrate(vm, extra)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", default="80mbit")
    parser.add_argument("--pages-per-s", type=int, default=25600)
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        help="e.g. busy-kumo: run these only (the bound then comes from the last full run)",
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
    link = float(args.rate.removesuffix("mbit")) * 1e6 / 8  # bytes/s
    kumo("lab", "down")
    kumo("lab", "up", "--hosts", "2", timeout=900)
    plan = lab_mod.current_plan()
    rows = []
    try:
        for workload in ("busy", "idle"):
            for method in ("virsh", "kumo"):
                if args.only and f"{workload}-{method}" not in args.only:
                    continue
                rows.append(
                    run(plan, workload, method, args.rate, args.pages_per_s, args.kumo_option)
                )
                print(json.dumps(rows[-1]), flush=True)
    finally:
        kumo("lab", "down", check=False)
    # The bound: the guest's non-zero memory over the link rate, from libvirt's count of
    # zero pages in the plain runs (kumo's may end in post-copy, which keeps no statistics).
    for r in rows:
        plain = next(
            p for p in rows + previous if p["workload"] == r["workload"] and p["method"] == "virsh"
        )
        zero = plain.get("zero_pages") or 0
        nonzero = 256 * 2**20 - zero * PAGE
        r["bound_s"] = round(nonzero / link, 1)
        r["total_s"] = round(r["end"] - r["start"], 1)
        r["ratio"] = round(r["total_s"] / r["bound_s"], 2)
    print(
        f"{'workload':<8} {'method':<7} {'converged':>9} {'total s':>8} {'downtime ms':>12} "
        f"{'libvirt dt':>10} {'bound s':>8} {'ratio':>6} {'same boot':>9}  strategy"
    )
    for r in rows:
        converged = r["ok"] and not r["forced_pause"]
        print(
            f"{r['workload']:<8} {r['method']:<7} {converged!s:>9} {r['total_s']:>8} "
            f"{r['downtime_ms']:>12} {r['libvirt_downtime_ms']!s:>10} {r['bound_s']:>8} "
            f"{r['ratio']:>6} {r['same_boot']!s:>9}  {r['strategy']}"
        )
    if args.only:
        out = out.with_name("migration-partial.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rate": args.rate, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
