"""Benchmark: time from `kumo lab up --hosts N` to a healthy `kumo lab status`, guest
images cached. Prints a table and writes bench/results/lab_up.json.

    sudo .venv/bin/python -m bench.lab_up --hosts 4 --runs 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def kumo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kumo", *args], capture_output=True, text=True, check=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    kumo("lab", "down")
    kumo("lab", "build-guest")
    rows = []
    for run in range(1, args.runs + 1):
        t0 = time.monotonic()
        kumo("lab", "up", "--hosts", str(args.hosts))
        status = json.loads(kumo("lab", "status", "--json").stdout)
        took = time.monotonic() - t0
        healthy = status["etcd"]["healthy"] and all(
            n["state"] == "running" for n in status["nodes"]
        )
        t1 = time.monotonic()
        kumo("lab", "down")
        rows.append(
            {
                "run": run,
                "hosts": args.hosts,
                "up_s": round(took, 1),
                "healthy": healthy,
                "down_s": round(time.monotonic() - t1, 1),
            }
        )
    print(f"{'run':>3} {'hosts':>5} {'up+status s':>12} {'healthy':>8} {'down s':>7}")
    for r in rows:
        print(f"{r['run']:>3} {r['hosts']:>5} {r['up_s']:>12} {r['healthy']!s:>8} {r['down_s']:>7}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "lab_up.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
