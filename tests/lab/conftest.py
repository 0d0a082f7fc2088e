"""Fixtures for end-to-end tests in the real lab (root, namespaces, libvirtd, QEMU, etcd)."""

from __future__ import annotations

import os
import subprocess
import sys
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
