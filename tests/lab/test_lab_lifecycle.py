"""`kumo lab up`/`down` around failures: a foreign route into the lab range, and an `up`
killed half-way. Runs with no lab up (the lab2 fixture of other modules is torn down)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from kumo.lab import lab as lab_mod
from tests.lab.conftest import kumo


def test_up_refuses_when_another_route_covers_the_lab_range() -> None:
    kumo("lab", "down")
    # A route to loopback: claims part of the range, sends nothing anywhere.
    subprocess.run(["ip", "route", "add", "198.18.7.0/24", "dev", "lo"], check=True)
    try:
        proc = kumo("lab", "up", "--hosts", "1", check=False)
    finally:
        subprocess.run(["ip", "route", "del", "198.18.7.0/24", "dev", "lo"], check=True)
    assert proc.returncode != 0
    assert "another route already covers part of 198.18.0.0/15" in " ".join(proc.stderr.split())
    assert "198.18.7.0/24 dev lo" in proc.stderr
    assert lab_mod.leftovers() == []


def test_down_cleans_up_after_up_was_killed_half_way() -> None:
    kumo("lab", "down")
    up = subprocess.Popen(
        [sys.executable, "-m", "kumo", "lab", "up", "--hosts", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it once the hosts exist and their libvirtd are starting.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not Path("/run/kumo-lab/ns/h2.mnt").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    up.send_signal(signal.SIGKILL)
    up.wait()
    assert lab_mod.leftovers() != []  # it really died half-way, leaving things behind
    out = kumo("lab", "down")
    assert "removed" in out.stdout
    assert lab_mod.leftovers() == []
    # and down is quiet when nothing is up
    again = kumo("lab", "down")
    assert again.stdout == "" and again.stderr == ""
