"""Failover in the lab: kill a host holding 1, then 8 HA VMs, and time what the user feels.

For each run, on a fresh victim host: N HA VMs are created on it and boot; every host's
running domains are sampled every 200 ms (from inside each host, libvirt's own list); then
`kumo lab fault kill-host VICTIM` pulls its power (every process of the host dies: libvirtd,
QEMU, the agent, the watchdog). From that instant:

  (a) lease gone   the victim's alive key disappears from etcd (its agent's lease expired);
  (b) running      each VM's domain is first seen running on another host;
  (c) heartbeat    each VM's guest is heard again: a heartbeat with a new boot id on its
                   serial console, read through the API.

and at the end the samples are checked for a VM seen running on two hosts at once (a
double run; must be 0). The victim is then healed (it rejoins, unfenced) and its VMs deleted.
Guests run under TCG here (about 10 s to boot one alone; eight at once share two cores), so
(c) is slower than on KVM hosts; (b) does not depend on it.

    .venv/bin/python -m bench.failover [--runs 5] [--sizes 1 8]

Writes bench/results/failover.json and prints p50/p95/max per size and measure.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from kumo.lab import control_plane
from kumo.lab import lab as lab_mod
from kumo.lab.sampler import DomainSampler
from kumo.store import keys
from kumo.store.etcd import EtcdStore

BOOT = re.compile(r"KUMO-GUEST boot=(\S+) n=(\d+)")
RESULTS = Path(__file__).parent / "results" / "failover.json"


def kumo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "kumo", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"failover bench: kumo {' '.join(args)} exited {proc.returncode}: "
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc


class Api:
    def __init__(self, plan: Any) -> None:
        token = control_plane.TOKEN_FILE.read_text().strip()
        self.http = httpx.Client(
            base_url=control_plane.api_url(plan) + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    def boot_id(self, vm: str) -> str | None:
        r = self.http.get(f"/vms/{vm}/console-log", params={"bytes": 3000})
        found = BOOT.findall(r.text) if r.status_code == 200 else []
        return str(found[-1][0]) if found else None

    def host_state(self, host: str) -> str:
        hosts = self.http.get("/hosts").json()
        return str(next(h["state"] for h in hosts if h["name"] == host))


def wait(what: str, cond: Any, timeout: float = 180, period: float = 0.1) -> float:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"failover bench: {what} not within {timeout:.0f} s")
        time.sleep(period)
    return time.time()


def one_run(plan: Any, api: Api, store: EtcdStore, victim: str, n: int, tag: str) -> dict[str, Any]:
    names = [f"fo-{tag}-{i}" for i in range(n)]
    for name in names:
        kumo("vm", "create", name, "--image", "testguest", "--memory", "128", "--host", victim)
    booted = {}
    for name in names:
        wait(f"{name} boots", lambda name=name: api.boot_id(name) is not None, period=0.5)
        booted[name] = api.boot_id(name)
    sampler = DomainSampler(plan).start()
    try:
        wait("samples from every host", lambda: all(sampler.samples.values()))
        t0 = time.time()
        kumo("lab", "fault", "kill-host", victim)
        lease_gone = wait("the lease to expire", lambda: store.get(keys.ALIVE + victim) is None)
        heard: dict[str, float] = {}

        def all_heard() -> bool:
            for name in names:
                if name not in heard:
                    now = api.boot_id(name)
                    if now is not None and now != booted[name]:
                        heard[name] = time.time()
            return len(heard) == n

        wait("every guest heard again", all_heard, timeout=300, period=0.2)
        time.sleep(1)  # a last look at every host: anything still running twice
    finally:
        sampler.stop()
    running = {v: sampler.first_running(v, t0, not_on=victim) for v in names}
    doubles = sampler.doubles()
    kumo("lab", "fault", "heal", victim, timeout=300)
    wait(f"{victim} rejoins", lambda: api.host_state(victim) == "up", period=0.5)
    for name in names:
        kumo("vm", "delete", name, "--wait", timeout=300)
    return {
        "vms": n,
        "victim": victim,
        "lease_gone_s": round(lease_gone - t0, 2),
        "running_s": [round(t - t0, 2) if t is not None else None for t in running.values()],
        "heartbeat_s": [round(heard[v] - t0, 2) for v in names],
        "double_runs": len(doubles),
        "doubles": doubles[:5],
    }


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def summary(rows: list[dict[str, Any]], size: int) -> dict[str, Any]:
    mine = [r for r in rows if r["vms"] == size]
    out: dict[str, Any] = {"vms": size, "runs": len(mine)}
    for key, values in (
        ("lease_gone_s", [r["lease_gone_s"] for r in mine]),
        ("running_s", [t for r in mine for t in r["running_s"] if t is not None]),
        ("heartbeat_s", [t for r in mine for t in r["heartbeat_s"]]),
    ):
        if values:
            out[key] = {
                "p50": round(statistics.median(values), 2),
                "p95": round(pct(values, 95), 2),
                "max": round(max(values), 2),
                "n": len(values),
            }
    out["never_running"] = sum(t is None for r in mine for t in r["running_s"])
    out["double_runs"] = sum(r["double_runs"] for r in mine)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    kumo("lab", "down")
    kumo("lab", "up", "--hosts", "3", timeout=900)
    plan = lab_mod.current_plan()
    api, store = Api(plan), EtcdStore(plan.etcd_endpoint)
    rows: list[dict[str, Any]] = []
    try:
        k = 0
        for size in args.sizes:
            for run in range(args.runs):
                victim = plan.hosts[k % len(plan.hosts)].name
                k += 1
                rows.append(one_run(plan, api, store, victim, size, f"{size}x{run}"))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        kumo("lab", "down")
        RESULTS.parent.mkdir(exist_ok=True)
        sums = [summary(rows, s) for s in args.sizes]
        RESULTS.write_text(json.dumps({"rows": rows, "summary": sums}, indent=2))
    print(f"{'VMs':>4} {'measure':<13} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'n':>4}")
    for s in sums:
        for key in ("lease_gone_s", "running_s", "heartbeat_s"):
            if key in s:
                m = s[key]
                print(
                    f"{s['vms']:>4} {key:<13} {m['p50']:>7} {m['p95']:>7} {m['max']:>7} {m['n']:>4}"
                )
        print(f"{s['vms']:>4} double runs: {s['double_runs']}; never running: {s['never_running']}")


if __name__ == "__main__":
    main()
