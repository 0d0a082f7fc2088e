"""The watchdog's pure parts: which guests are HA (from libvirt's runtime files alone), when
the agent counts as silent, and that it kills exactly the HA guests."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

from kumo.agent.watchdog import TIMEOUT_S, bite, feed, ha_guests, starving
from kumo.hypervisor.domain import DiskConfig, DomainConfig, domain_xml

BASE = DomainConfig(
    name="web1",
    uuid="6b756d6f-0000-4000-8000-000000000001",
    domain_type="qemu",
    vcpus=1,
    memory_mib=128,
    disks=(DiskConfig("/pool/web1.qcow2"),),
    nics=(),
)


def status_file(run: Path, cfg: DomainConfig, pid: int) -> None:
    """What libvirtd writes for a running domain: <domstatus> around the live definition."""
    inner = domain_xml(cfg).replace("<domain ", "  <domain ", 1)
    (run / f"{cfg.name}.xml").write_text(
        "<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE.\n-->\n"
        f"<domstatus state='running' reason='booted' pid='{pid}'>\n{inner}</domstatus>\n"
    )
    (run / f"{cfg.name}.pid").write_text(f"{pid}")


def test_ha_guests_are_read_from_the_runtime_status_files(tmp_path: Path) -> None:
    status_file(tmp_path, dataclasses.replace(BASE, ha=True), 101)
    status_file(tmp_path, dataclasses.replace(BASE, name="off1"), 102)
    (tmp_path / "driver.pid").write_text("7")  # libvirt's own files are not guests
    (tmp_path / "broken.xml").write_text("<domstatus")
    assert ha_guests(tmp_path) == {"web1": 101}


def test_bite_kills_only_the_ha_guests(tmp_path: Path) -> None:
    status_file(tmp_path, dataclasses.replace(BASE, ha=True), 101)
    status_file(tmp_path, dataclasses.replace(BASE, name="gone", ha=True), 103)
    status_file(tmp_path, dataclasses.replace(BASE, name="off1"), 102)
    killed: list[tuple[int, int]] = []

    def kill(pid: int, sig: int) -> None:
        if pid == 103:
            raise ProcessLookupError  # exited meanwhile
        killed.append((pid, sig))

    done: set[int] = set()
    assert bite(tmp_path, kill, done) == ["web1"]
    assert killed == [(101, signal.SIGKILL)]
    assert bite(tmp_path, kill, done) == []  # its status file lingers until libvirtd reaps it
    assert killed == [(101, signal.SIGKILL)]


def test_the_agent_is_silent_once_its_feed_is_older_than_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "run" / "agent.feed"
    assert not starving(path, time.time())  # never fed: not armed
    feed(path)
    now = path.stat().st_mtime
    assert not starving(path, now + TIMEOUT_S - 0.1)
    assert starving(path, now + TIMEOUT_S + 0.1)
    os.utime(path, (now + 10, now + 10))
    assert not starving(path, now + 12)
