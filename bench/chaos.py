"""The chaos benchmark (#11): 100 random faults from the lab's catalogue on a fresh 3-host lab
with 6 HA VMs, while every host's running domains (200 ms) and every guest's serial console
(250 ms) are sampled. Reports the faults with the recovery each took, double runs, VMs not
running and tasks not ended at the end, and how long after the last heal every HA VM ran
again (target: 0, 0, 0 and <= 60 s). Same seed, same faults (kumo.chaos).

    .venv/bin/python -m bench.chaos [--faults 100] [--seed 11] [--hosts 3]

Writes bench/results/chaos.json and prints the tables; the lab is taken down at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from kumo.lab import chaos as chaos_mod

RESULTS = Path(__file__).parent / "results" / "chaos.json"


def kumo(*args: str, timeout: float = 900) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kumo", *args], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"chaos bench: kumo {' '.join(args)} exited {proc.returncode}: "
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--vms", type=int, default=6)
    args = parser.parse_args()
    out = Console()
    kumo("lab", "down")
    kumo("lab", "up", "--hosts", str(args.hosts))
    try:
        report = chaos_mod.run(
            chaos_mod.Options(faults=args.faults, seed=args.seed, vms=args.vms),
            log=lambda s: out.print(s, highlight=False),
        )
    finally:
        kumo("lab", "down")
    RESULTS.parent.mkdir(exist_ok=True)
    data = report.to_json()
    data["command"] = f"python -m bench.chaos --faults {args.faults} --seed {args.seed}"
    RESULTS.write_text(json.dumps(data, indent=2))
    for table in chaos_mod.tables(report):
        out.print(table)
    out.print(f"written: {RESULTS}")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
