"""Shared fixtures: a real etcd on loopback for contract and control-plane tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A single-member etcd on 127.0.0.1, for the whole test session."""
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed: run scripts/setup")
    data = tmp_path_factory.mktemp("etcd")
    client, peer = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{client}"
    log = Path(data) / "etcd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "etcd",
                "--name",
                "test",
                "--data-dir",
                str(data / "data"),
                "--listen-client-urls",
                endpoint,
                "--advertise-client-urls",
                endpoint,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"test=http://127.0.0.1:{peer}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{endpoint}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield endpoint
    finally:
        proc.kill()
        proc.wait()
