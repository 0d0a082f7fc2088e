"""Fixtures for end-to-end tests in the real lab (root, namespaces, libvirtd, QEMU, etcd)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from kumo.lab import lab as lab_mod
from kumo.lab.guest import GuestImage, build_guest


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

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.thread.join(timeout=5)
