"""A NAS outage, end to end: a guest whose disk is on the lab's ``nbd`` pool (a raw file that
nbdkit on nas1 serves over the storage network; QEMU's own NBD client reads and writes it)
writes a counter to its disk every second. ``kumo lab fault nas-down`` makes nas1 silent for
20 s: QEMU gets I/O errors and, with ``error_policy='stop'``, pauses the guest; every agent's
storage path goes down (the NAS is down for everyone: nothing moves). ``nas-up``: the agent
resumes the guest once its storage path is up again. The guest goes on with the same boot,
counting from where it stopped, and the disk holds its newest count: nothing lost.

The hosts' ``net.ipv4.tcp_retries2`` is lowered to 3 for the test (about 6 s before a silent
peer breaks a TCP connection, instead of about 15 min): without it QEMU's NBD client would
wait on the dead connection rather than report an error (QEMU 7.2 has no NBD keep-alive
timeouts). A site with its disks on NBD or iSCSI tunes the same."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kumo.lab import services
from kumo.lab.plan import LabPlan
from tests.lab.conftest import VMs, heartbeats, kumo

# The counter's sector: 64 MiB in, past the golden image's partition, inside the 1 GiB disk.
SECTOR = 131072
COUNTER_LOOP = (
    f"i=$(dd if=/dev/vda bs=512 skip={SECTOR} count=1 iflag=direct 2>/dev/null "
    "| sed -n s/^counter=//p); i=${i:-0}; "
    "while true; do i=$((i+1)); "
    f"echo counter=$i | dd of=/dev/vda bs=512 seek={SECTOR} count=1 conv=sync,fsync "
    "oflag=direct 2>/dev/null && echo KUMO-GUEST counter=$i >/dev/ttyS0; sleep 1; done"
)
COUNTER = re.compile(r"KUMO-GUEST counter=(\d+)")


@pytest.fixture
def quick_tcp_timeouts(plan: LabPlan) -> Iterator[None]:
    key = "net.ipv4.tcp_retries2"
    before = {}
    for h in plan.hosts:
        out = subprocess.run(
            ["ip", "netns", "exec", h.netns, "sysctl", "-n", key],
            capture_output=True,
            text=True,
            check=True,
        )
        before[h.netns] = out.stdout.strip()
        subprocess.run(["ip", "netns", "exec", h.netns, "sysctl", "-qw", f"{key}=3"], check=True)
    try:
        yield
    finally:
        for ns, value in before.items():
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"])


@pytest.fixture
def nas_comes_back() -> Iterator[None]:
    try:
        yield
    finally:
        kumo("lab", "fault", "nas-up", check=False)


def counts(vm: str) -> list[int]:
    text = kumo("vm", "console-log", vm, "--bytes", "20000", check=False).stdout
    return [int(n) for n in COUNTER.findall(text)]


def vm_show(vm: str) -> dict[str, object]:
    shown: dict[str, object] = json.loads(kumo("vm", "show", vm, "-o", "json").stdout)
    return shown


def on_disk(vm: str) -> int:
    """The count the disk holds now, read from the file nbdkit serves (on nas1)."""
    with open(services.nbd_export() / "vms" / f"{vm}.raw", "rb") as f:
        f.seek(SECTOR * 512)
        sector = f.read(512)
    m = re.match(rb"counter=(\d+)\n", sector)
    assert m, f"no counter on {vm}'s disk: {sector[:32]!r}"
    return int(m.group(1))


def wait_for(what: str, cond: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.5)
    return time.monotonic() - t0


def test_a_nas_outage_pauses_the_guest_and_it_resumes_with_nothing_lost(
    plan: LabPlan, vms: VMs, quick_tcp_timeouts: None, nas_comes_back: None
) -> None:
    vm = vms.create("nasvm", "--runcmd", COUNTER_LOOP, image="testguest-nbd")
    shown = vm_show(vm)
    assert shown["pool"] == "nbd"
    wait_for("the guest counting on its disk", lambda: len(counts(vm)) >= 3, timeout=120)
    boot = heartbeats(vm)[-1][0]
    host = str(shown["host"])

    kumo("lab", "fault", "nas-down")
    t_down = time.monotonic()
    paused_s = wait_for(
        "the guest paused on its disk's I/O error",
        lambda: vm_show(vm)["state"] == "paused",
        timeout=60,
    )
    before = counts(vm)
    time.sleep(max(0.0, 20 - (time.monotonic() - t_down)))  # the NAS away for 20 s
    assert vm_show(vm)["state"] == "paused"
    assert counts(vm) == before, "the guest counted while its disk was away"
    kumo("lab", "fault", "nas-up")
    t_up = time.monotonic()

    wait_for("the guest running again", lambda: vm_show(vm)["state"] == "running", timeout=180)
    wait_for("the guest counting again", lambda: len(counts(vm)) > len(before), timeout=150)
    counting_s = time.monotonic() - t_up
    wait_for("three more counts", lambda: len(counts(vm)) >= len(before) + 3, timeout=60)
    after = counts(vm)
    # one boot, one count: every number once, in order, on from where it stopped
    assert after == list(range(after[0], after[0] + len(after))), after
    assert heartbeats(vm)[-1][0] == boot, "the guest rebooted"
    assert vm_show(vm)["host"] == host, "the guest moved"
    assert on_disk(vm) >= after[-1] - 1  # the disk holds the newest count (or the one before)
    events = kumo("events", "--object", f"vm/{vm}", "--limit", "50").stdout
    assert "resume" in events, events
    print(f"paused {paused_s:.1f} s after nas-down; counting again {counting_s:.1f} s after nas-up")


def test_the_lab_serves_the_nbd_pool_from_nas1() -> None:
    assert services.nbd_running()
    assert Path(services.nbd_export() / "images" / "testguest.qcow2").is_file()
