"""The test guest on its own (plain QEMU, no network): BIOS boot from the golden disk,
the heartbeat line, and a NoCloud seed giving hostname, SSH keys and a user script that
starts the memory dirtier."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from kumo.lab.guest import GuestImage
from kumo.provision.seed import write_nocloud_iso

USER_SCRIPT = """#!/bin/sh
dirty 8 500 &
sleep 1
echo "USER-SCRIPT dirty-pid=$(pidof dirty) keys=$(cat /root/.ssh/authorized_keys)" >/dev/ttyS0
"""


def test_golden_image_boots_through_bios_and_reads_seed(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(guest_image.golden),
            str(disk),
        ],
        check=True,
    )
    seed = tmp_path / "seed.iso"
    write_nocloud_iso(
        seed,
        meta_data="instance-id: t1\nlocal-hostname: seedtest\n",
        user_data=USER_SCRIPT,
    )
    log = tmp_path / "serial.log"
    proc = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "128",
            "-nic",
            "none",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            f"file:{log}",
            "-drive",
            f"file={disk},if=virtio",
            "-cdrom",
            str(seed),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        text = _wait_for(log, r"USER-SCRIPT dirty-pid=\d+", 90)
    finally:
        proc.kill()
        proc.wait()
    assert "SYSLINUX" in text  # the BIOS ran the bootloader on the disk (no direct kernel boot)
    assert re.search(r"KUMO-GUEST boot=[0-9a-f-]{36} n=\d+ host=seedtest", text), text[-2000:]


def test_cloud_config_seed_sets_hostname_and_keys(guest_image: GuestImage, tmp_path: Path) -> None:
    seed = tmp_path / "seed.iso"
    write_nocloud_iso(
        seed,
        meta_data="instance-id: t2\n",
        user_data="#cloud-config\nhostname: cc1\nssh_authorized_keys:\n"
        "  - ssh-ed25519 AAAATEST kumo@test\n",
    )
    log = tmp_path / "serial.log"
    proc = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "128",
            "-nic",
            "none",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            f"file:{log}",
            "-kernel",
            str(guest_image.kernel),
            "-initrd",
            str(guest_image.initrd),
            "-append",
            "console=ttyS0 quiet",
            "-cdrom",
            str(seed),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        text = _wait_for(log, r"KUMO-GUEST boot=\S+ n=1 host=cc1", 90)
    finally:
        proc.kill()
        proc.wait()
    assert "KUMO-GUEST keys=ssh-ed25519 AAAATEST kumo@test" in text


def _wait_for(log: Path, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if re.search(pattern, text):
            return text
        time.sleep(0.5)
    raise AssertionError(
        f"no {pattern!r} on the serial console in {timeout:.0f} s:\n{text[-3000:]}"
    )
