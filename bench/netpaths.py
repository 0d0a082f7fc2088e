"""Network-path failover in the lab (#11): cut a host's public link while it runs 4 HA VMs
(2 with ``--failback`` to it), and time what the user feels, with kumo's default settings
(pings every 1 s, down after 3 misses, up after 5 s of answers, stabilisation 60 s).

From the cut (`kumo lab fault cut VICTIM public`):
  degraded     the host shows ``degraded`` (the API);
  all moved    every HA VM runs on another host (the API says running, elsewhere);
and per VM the longest silence of its heartbeat (every host's serial console log read every
0.25 s) and whether it kept its boot (a live move, never a restart).

From the heal (`kumo lab fault heal VICTIM`):
  up           the host shows ``up`` again (its path judged up, the mark removed);
  failback     both failback VMs run on the victim again (after the 60 s stabilisation).

Every host's running domains are sampled every 200 ms: a VM seen running on two hosts at
once is a double run (must be 0).

    .venv/bin/python -m bench.netpaths [--runs 3]

Writes bench/results/netpaths.json and prints p50/max per measure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from kumo.chaos import domain_doubles
from kumo.lab import control_plane
from kumo.lab import lab as lab_mod
from kumo.lab.heartbeats import HeartbeatTail
from kumo.lab.sampler import RunningSampler

RESULTS = Path(__file__).parent / "results" / "netpaths.json"


def kumo(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "kumo", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"netpaths bench: kumo {' '.join(args)} exited {proc.returncode}: "
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc.stdout


class Api:
    def __init__(self, plan: Any) -> None:
        token = control_plane.TOKEN_FILE.read_text().strip()
        self.http = httpx.Client(
            base_url=control_plane.api_url(plan) + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    def host_state(self, host: str) -> str:
        hosts = self.http.get("/hosts").json()
        return str(next(h["state"] for h in hosts if h["name"] == host))

    def vms(self) -> dict[str, dict[str, Any]]:
        return {v["name"]: v for v in self.http.get("/vms", params={"limit": 500}).json()}


def wait(what: str, cond: Any, timeout: float = 300, period: float = 0.1) -> float:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"netpaths bench: {what} not within {timeout:.0f} s")
        time.sleep(period)
    return time.time()


def one_run(plan: Any, api: Api, victim: str, tag: str) -> dict[str, Any]:
    back = [f"np-{tag}-fb{i}" for i in range(2)]
    stay = [f"np-{tag}-{i}" for i in range(2)]
    names = back + stay
    for name in back:
        kumo("vm", "create", name, "--image", "testguest", "--memory", "128", "--host", victim,
             "--preferred", victim, "--failback")  # fmt: skip
    for name in stay:
        kumo("vm", "create", name, "--image", "testguest", "--memory", "128", "--host", victim)
    tail = HeartbeatTail(plan, names).start()
    sampler = RunningSampler(plan).start()
    try:

        def heard(n: int) -> bool:
            return all(len({b.n for b in tail.beats if b.vm == v}) >= n for v in names)

        wait("every guest heard", lambda: heard(3), timeout=180, period=0.5)
        t0 = time.time()
        kumo("lab", "fault", "cut", victim, "public")
        degraded = wait(f"{victim} degraded", lambda: api.host_state(victim) == "degraded")

        def moved() -> bool:
            vms = api.vms()
            return all(vms[v]["host"] != victim and vms[v]["state"] == "running" for v in names)

        all_moved = wait("every VM moved", moved, timeout=300, period=0.2)
        t1 = time.time()
        kumo("lab", "fault", "heal", victim, timeout=300)
        up = wait(f"{victim} up", lambda: api.host_state(victim) == "up")

        def home() -> bool:
            vms = api.vms()
            return all(vms[v]["host"] == victim and vms[v]["state"] == "running" for v in back)

        failback = wait("failback done", home, timeout=400, period=0.5)
        n = max(b.n for b in tail.beats)
        wait("heard after failback", lambda: max(b.n for b in tail.beats) >= n + 3, timeout=60)
    finally:
        tail.stop()
        sampler.stop()
    silences, boots = {}, {}
    for v in names:
        beats = sorted({(b.boot, b.n): b.seen_at for b in tail.beats if b.vm == v}.values())
        silences[v] = round(max(b - a for a, b in itertools.pairwise(beats)), 2)
        boots[v] = len({b.boot for b in tail.beats if b.vm == v})
    doubles = domain_doubles(sampler.windows)
    stayed = all(api.vms()[v]["host"] != victim for v in stay)
    for name in names:
        kumo("vm", "delete", name, "--wait", timeout=300)
    return {
        "victim": victim,
        "degraded_s": round(degraded - t0, 2),
        "all_moved_s": round(all_moved - t0, 2),
        "up_after_heal_s": round(up - t1, 2),
        "failback_after_heal_s": round(failback - t1, 2),
        "longest_silence_s": max(silences.values()),
        "silences_s": silences,
        "restarts": sum(b - 1 for b in boots.values()),
        "no_failback_stayed": stayed,
        "double_runs": len(doubles),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    kumo("lab", "down")
    kumo("lab", "up", "--hosts", "3", timeout=900)
    plan = lab_mod.current_plan()
    api = Api(plan)
    rows: list[dict[str, Any]] = []
    try:
        for run in range(args.runs):
            victim = plan.hosts[run % len(plan.hosts)].name
            rows.append(one_run(plan, api, victim, str(run)))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        kumo("lab", "down")
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"rows": rows}, indent=2))
    print(f"{'measure':<24} {'p50 s':>7} {'max s':>7} {'n':>3}")
    for key in (
        "degraded_s",
        "all_moved_s",
        "longest_silence_s",
        "up_after_heal_s",
        "failback_after_heal_s",
    ):
        values = [r[key] for r in rows]
        print(f"{key:<24} {statistics.median(values):>7.2f} {max(values):>7.2f} {len(values):>3}")
    print(
        f"restarts: {sum(r['restarts'] for r in rows)}; double runs: "
        f"{sum(r['double_runs'] for r in rows)}; VMs without failback stayed away: "
        f"{all(r['no_failback_stayed'] for r in rows)}"
    )


if __name__ == "__main__":
    main()
