"""Fixtures for end-to-end tests in the real lab (root, namespaces, libvirtd, QEMU, etcd)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from kumo.lab import lab as lab_mod
from kumo.lab.guest import GuestImage, build_guest
from kumo.lab.plan import LabPlan


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="lab tests need root (namespaces)"))


def kumo(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `kumo` command, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "kumo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kumo {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    return build_guest()


@pytest.fixture(scope="module")
def plan(guest_image: GuestImage) -> Iterator[LabPlan]:
    """A 3-host lab for one test module (each module that asks gets its own, and leaves none)."""
    kumo("lab", "down")
    try:
        kumo("lab", "up", "--hosts", "3")
        yield lab_mod.current_plan()
    finally:
        kumo("lab", "down", check=False)
    assert lab_mod.leftovers() == []


@pytest.fixture(scope="module")
def lab2(guest_image: GuestImage) -> Iterator[None]:
    """A 2-host lab for the module; always taken down, and checked clean afterwards."""
    kumo("lab", "down")
    try:
        kumo("lab", "up", "--hosts", "2")
        yield
    finally:
        kumo("lab", "down", check=False)
    assert lab_mod.leftovers() == []


HEARTBEAT = re.compile(r"KUMO-GUEST boot=(\S+) n=(\d+) host=(\S+)")


class HttpPoller:
    """Polls the guest's HTTP heartbeat from the router namespace, timestamping each answer."""

    def __init__(self, ip: str) -> None:
        script = (
            f"while :; do printf '%s ' $(date +%s.%N); "
            f"curl -s -m 1 http://{ip}/ || echo FAIL; sleep 0.1; done"
        )
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", "kumo-router", "sh", "-c", script],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.samples: list[tuple[float, str, int]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            stamp, _, rest = line.partition(" ")
            m = HEARTBEAT.search(rest)
            if m:
                self.samples.append((float(stamp), m.group(1), int(m.group(2))))

    def wait_more(self, more: int, timeout: float = 30) -> None:
        """Until the guest has answered ``more`` times beyond the answers seen so far."""
        want = len(self.samples) + more
        deadline = time.monotonic() + timeout
        while len(self.samples) < want:
            assert time.monotonic() < deadline, f"the guest stopped answering: {self.samples[-3:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.thread.join(timeout=5)


def heartbeats(vm: str, nbytes: int = 4000) -> list[tuple[str, int]]:
    """The (boot id, counter) of every heartbeat in the VM's console log, oldest first."""
    text = kumo("vm", "console-log", vm, "--bytes", str(nbytes), check=False).stdout
    return [(b, int(n)) for b, n, _ in HEARTBEAT.findall(text)]


def last_heartbeat(vm: str, timeout: float = 120) -> tuple[str, int]:
    """The VM's newest heartbeat, waiting for its first one."""
    deadline = time.monotonic() + timeout
    while not (seen := heartbeats(vm)):
        assert time.monotonic() < deadline, f"{vm}: no heartbeat within {timeout:.0f} s"
        time.sleep(0.5)
    return seen[-1]


def heartbeat_after(vm: str, ref: tuple[str, int], lines: int = 3, timeout: float = 120) -> str:
    """The boot id of a heartbeat newer than ``ref``: one from another boot, or ``lines``
    counts past ``ref`` in the same boot. A reboot after ``ref`` cannot hide behind an old
    line: its first heartbeat carries a new boot id."""
    deadline = time.monotonic() + timeout
    while True:
        seen = heartbeats(vm)
        if seen and (seen[-1][0] != ref[0] or seen[-1][1] >= ref[1] + lines):
            return seen[-1][0]
        if time.monotonic() > deadline:
            said = kumo("vm", "console-log", vm, "--bytes", "400", check=False)
            events = kumo("events", "--object", f"vm/{vm}", "--limit", "30", check=False).stdout
            raise AssertionError(
                f"{vm}: no heartbeat newer than {ref}: {seen[-3:]}; console-log said "
                f"{said.stdout[-400:]!r} {said.stderr[-400:]!r}; events:\n{events}"
            )
        time.sleep(0.5)


class VMs:
    """VMs a test makes for itself through the CLI; deleted when the test ends."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(
        self,
        name: str,
        *args: str,
        memory: int = 128,
        wait: bool = True,
        image: str = "testguest",
    ) -> str:
        self.names.append(name)
        extra = ["--wait"] if wait else []
        kumo("vm", "create", name, "--image", image, "--memory", str(memory), *args, *extra)
        return name

    def delete_all(self) -> None:
        for name in reversed(self.names):
            kumo("vm", "delete", name, "--wait", check=False, timeout=120)


@pytest.fixture
def vms() -> Iterator[VMs]:
    made = VMs()
    try:
        yield made
    finally:
        made.delete_all()
