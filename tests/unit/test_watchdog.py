"""The watchdog's pure parts: which guests are HA (from libvirt's runtime files alone), when
the agent counts as silent, and that it kills exactly the HA guests; and its use of the kernel's
watchdog device, played here by a regular file (this kernel has none): keep-alive bytes while
the feed is fresh, none once it is stale, the magic "V" on a clean stop."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kumo.agent.watchdog import (
    DEVICE,
    KEEPALIVE,
    MAGIC_CLOSE,
    TIMEOUT_S,
    Device,
    Watchdog,
    bite,
    device_path,
    feed,
    ha_guests,
    starving,
)
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


class Kills:
    def __init__(self) -> None:
        self.pids: list[int] = []

    def __call__(self, pid: int, sig: int) -> None:
        assert sig == signal.SIGKILL
        self.pids.append(pid)


def fed_at(path: Path, t: float) -> None:
    feed(path)
    os.utime(path, (t, t))


def stand_in(tmp_path: Path) -> Path:
    """A regular file in place of /dev/watchdog: what is written to it stays there to read."""
    dev = tmp_path / "watchdog"
    dev.touch()
    return dev


def test_a_stand_in_device_opens_though_the_timeout_ioctl_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert Device.open(tmp_path / "missing") is None  # no device: the old behaviour
    with caplog.at_level(logging.WARNING, logger="kumo.watchdog"):
        dev = Device.open(stand_in(tmp_path))
    assert dev is not None
    assert dev.timeout is None  # a regular file has no timeout to set or tell
    assert "cannot set the timeout" in caplog.text
    dev.close(magic=True)


def test_the_device_is_kept_alive_while_fed_and_released_for_good_once_starved(
    tmp_path: Path,
) -> None:
    run = tmp_path / "qemu"
    run.mkdir()
    status_file(run, dataclasses.replace(BASE, ha=True), 101)
    status_file(run, dataclasses.replace(BASE, name="off1"), 102)
    path, kills, devpath = tmp_path / "agent.feed", Kills(), stand_in(tmp_path)
    dev = Device.open(devpath)
    assert dev is not None
    dog = Watchdog(path, run, dev, kills)
    dog.run_once(1000.0)  # not fed yet: the device is armed from its opening, so kept alive
    fed_at(path, 1000.0)
    for dt in (0.25, 0.5, TIMEOUT_S - 0.1):
        dog.run_once(1000.0 + dt)
    assert devpath.read_bytes() == KEEPALIVE * 4
    assert kills.pids == []

    dog.run_once(1000.0 + TIMEOUT_S + 0.1)  # silent: not written again, and QEMU killed
    dog.run_once(1000.0 + TIMEOUT_S + 0.35)
    assert devpath.read_bytes() == KEEPALIVE * 4
    assert kills.pids == [101]

    fed_at(path, 1007.0)  # the agent is back, too late: the leader may have fenced the host
    dog.run_once(1007.1)
    assert devpath.read_bytes() == KEEPALIVE * 4
    dog.stop()  # no magic close either: the pending reset is the fence
    assert devpath.read_bytes() == KEEPALIVE * 4


def test_a_clean_stop_writes_the_magic_close(tmp_path: Path) -> None:
    path, devpath = tmp_path / "agent.feed", stand_in(tmp_path)
    fed_at(path, 1000.0)
    dev = Device.open(devpath)
    assert dev is not None
    dog = Watchdog(path, tmp_path, dev, Kills())
    dog.run_once(1000.5)
    dog.stop()
    assert devpath.read_bytes() == KEEPALIVE + MAGIC_CLOSE
    assert MAGIC_CLOSE not in KEEPALIVE  # a keep-alive must not arm the magic close


def test_without_a_device_the_watchdog_only_kills_the_ha_guests(tmp_path: Path) -> None:
    status_file(tmp_path, dataclasses.replace(BASE, ha=True), 101)
    path, kills = tmp_path / "agent.feed", Kills()
    fed_at(path, 1000.0)
    dog = Watchdog(path, tmp_path, None, kills)
    dog.run_once(1001.0)
    assert kills.pids == []
    dog.run_once(1000.0 + TIMEOUT_S + 0.1)
    dog.run_once(1000.0 + TIMEOUT_S + 0.2)
    assert kills.pids == [101]
    dog.stop()


def test_the_device_comes_from_the_option_the_environment_or_the_default() -> None:
    assert device_path(env={}) == DEVICE == Path("/dev/watchdog")
    assert device_path(env={"KUMO_WATCHDOG_DEVICE": "/dev/watchdog1"}) == Path("/dev/watchdog1")
    assert device_path(env={"KUMO_WATCHDOG_DEVICE": ""}) is None
    assert device_path(env={"KUMO_WATCHDOG_DEVICE": "none"}) is None
    assert device_path("/dev/watchdog0", env={"KUMO_WATCHDOG_DEVICE": "x"}) == Path(
        "/dev/watchdog0"
    )
    assert device_path("/dev/watchdog0", disabled=True) is None


def test_the_daemon_says_its_mode_and_disarms_the_device_on_sigterm(tmp_path: Path) -> None:
    path, devpath = tmp_path / "agent.feed", stand_in(tmp_path)
    feed(path)
    code = (
        "from pathlib import Path; from kumo.agent.watchdog import run; "
        f"run(Path({str(path)!r}), Path({str(tmp_path)!r}), Path({str(devpath)!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    deadline = time.monotonic() + 10
    while not devpath.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"using {devpath} (timeout unknown)" in err
    written = devpath.read_bytes()
    assert written.endswith(MAGIC_CLOSE) and set(written[:-1]) == set(KEEPALIVE), written


def test_the_daemon_without_a_device_says_it_kills_the_guests_itself(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; from kumo.agent.watchdog import run; "
        f"run(Path({str(tmp_path / 'feed')!r}), Path({str(tmp_path)!r}), "
        f"Path({str(tmp_path / 'missing')!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # up to its loop, so that SIGTERM finds its handler installed
        lines.append(line)
        if "watching" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    err = "".join(lines) + err
    assert proc.returncode == 0, err
    assert f"no {tmp_path / 'missing'}: will kill HA guests' QEMU itself" in err, err
