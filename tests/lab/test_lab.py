"""`kumo lab` end to end: 2 real hosts, a guest booted from a linked clone of the golden
image on the shared pool, a live migration over the storage network, faults, bad input,
and a clean `down`."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from kumo.lab import lab as lab_mod
from kumo.lab.namespaces import STATE_DIR, pids_in_netns
from kumo.lab.plan import make_plan
from tests.lab.conftest import HEARTBEAT, HttpPoller, kumo

pytestmark = pytest.mark.usefixtures("lab2")

SHARED = "/var/lib/kumo/pools/shared"

DOMAIN_XML = """<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface>
    <serial type='pty'>
      <log file='/var/log/libvirt/qemu/{name}-serial.log' append='on'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>
"""


def serial_log(host: str, vm: str) -> str:
    path = STATE_DIR / host / "log-libvirt" / "qemu" / f"{vm}-serial.log"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_serial(host: str, vm: str, pattern: str, timeout: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, serial_log(host, vm))
        if m:
            return m
        time.sleep(0.5)
    raise AssertionError(
        f"{vm} on {host}: no {pattern!r} in {timeout:.0f} s:\n{serial_log(host, vm)[-2000:]}"
    )


def test_status_shows_every_node_and_healthy_etcd() -> None:
    out = json.loads(kumo("lab", "status", "--json").stdout)
    assert {n["name"] for n in out["nodes"]} == {"h1", "h2", "nas1", "router", "ctl"}
    assert all(n["state"] == "running" for n in out["nodes"]), out
    assert out["etcd"] == {"endpoint": "http://198.18.1.2:2379", "healthy": True}
    # etcd answers from the root namespace through the lab's veth
    subprocess.run(
        ["etcdctl", "--endpoints=http://198.18.1.2:2379", "put", "/kumo-test", "x"],
        check=True,
        capture_output=True,
        timeout=10,
    )


def test_lab_range_never_leaves_the_machine() -> None:
    def route_get(addr: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "route", "get", addr], capture_output=True, text=True)

    assert "dev kumo-pub" in route_get("198.18.0.11").stdout
    assert "dev kumo-sto" in route_get("198.18.1.2").stdout
    # Anything else in 198.18.0.0/15 hits the lab's unreachable route, not the default one.
    for addr in ("198.18.2.1", "198.19.255.1"):
        proc = route_get(addr)
        assert proc.returncode != 0 and "No route to host" in proc.stderr, proc


def test_guest_live_migrates_over_storage_network_without_losing_a_beat() -> None:
    disk = f"{SHARED}/mig1.qcow2"
    kumo(
        "lab",
        "exec",
        "h1",
        "--",
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        f"{SHARED}/images/testguest.qcow2",
        disk,
    )
    xml = Path(STATE_DIR / "h1" / "kumo" / "mig1.xml")
    domain_type = json.loads(lab_mod.STATE_FILE.read_text())["domain_type"]
    xml.write_text(DOMAIN_XML.format(name="mig1", disk=disk, domain_type=domain_type))
    kumo("lab", "exec", "h1", "--", "virsh", "define", "/var/lib/kumo/mig1.xml")
    kumo("lab", "exec", "h1", "--", "virsh", "start", "mig1")
    ip = wait_serial("h1", "mig1", r"KUMO-GUEST dhcp eth0 (\S+)").group(1)
    first = wait_serial("h1", "mig1", r"KUMO-GUEST boot=(\S+) n=3 ")
    boot_id = first.group(1)

    poller = HttpPoller(ip)
    try:
        poller.wait_more(10)
        t0 = time.monotonic()
        kumo(
            "lab",
            "exec",
            "h1",
            "--",
            "virsh",
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            "--undefinesource",
            "--unsafe",
            "mig1",
            "qemu+tcp://198.18.1.12/system",
            "--migrateuri",
            "tcp://198.18.1.12",
        )
        took = time.monotonic() - t0
        wait_serial("h2", "mig1", rf"KUMO-GUEST boot={boot_id} n=\d+", 30)
        poller.wait_more(10)  # answering from h2
    finally:
        poller.stop()

    running_h2 = kumo("lab", "exec", "h2", "--", "virsh", "list", "--name").stdout.split()
    running_h1 = kumo("lab", "exec", "h1", "--", "virsh", "list", "--all", "--name").stdout.split()
    assert running_h2 == ["mig1"] and "mig1" not in running_h1

    # Same boot, counter continues across hosts: the guest never restarted.
    before = [(b, int(n)) for b, n, _ in HEARTBEAT.findall(serial_log("h1", "mig1"))]
    after = [(b, int(n)) for b, n, _ in HEARTBEAT.findall(serial_log("h2", "mig1"))]
    assert {b for b, _ in before + after} == {boot_id}
    assert 0 < after[0][1] - before[-1][1] <= 2, (before[-3:], after[:3])

    # Seen from the router at the same address: the heartbeat never went silent for over
    # 2 s (time between consecutive answers, polled every 0.1 s), and its counter never
    # went back or jumped.
    samples = poller.samples
    assert samples and {b for _, b, _ in samples} == {boot_id}
    gaps = [(b[0] - a[0], a[2], b[2]) for a, b in itertools.pairwise(samples)]
    worst = max(gaps)
    assert worst[0] <= 2.0, f"heartbeat silent {worst[0]:.2f} s (migration took {took:.1f} s)"
    assert all(0 <= n2 - n1 <= 2 for _, n1, n2 in gaps), gaps
    assert samples[-1][2] > before[-1][1]  # still answering, from h2, after the move


def test_faults_cut_partition_slow_kill_and_heal() -> None:
    plan = make_plan(2)

    def reach(src: str, dst: str) -> bool:
        return (
            kumo(
                "lab", "exec", src, "--", "ping", "-c", "1", "-W", "1", dst, check=False
            ).returncode
            == 0
        )

    kumo("lab", "fault", "cut", "h1", "storage")
    assert not reach("h1", "198.18.1.10") and reach("h1", "198.18.0.1")
    kumo("lab", "fault", "heal", "h1")
    assert reach("h1", "198.18.1.10")

    kumo("lab", "fault", "partition", "h1")
    assert not reach("h1", "198.18.1.2")  # etcd's host
    assert reach("h1", "198.18.1.10") and reach("h1", "198.18.0.1")  # links stay up
    status = json.loads(kumo("lab", "status", "--json").stdout)
    h1 = next(n for n in status["nodes"] if n["name"] == "h1")
    assert "partitioned from etcd" in h1["detail"]
    kumo("lab", "fault", "heal", "h1")
    assert reach("h1", "198.18.1.2")

    kumo("lab", "fault", "slow", "h2", "storage", "80mbit")
    status = json.loads(kumo("lab", "status", "--json").stdout)
    assert (
        "storage slowed to 80mbit"
        in next(n for n in status["nodes"] if n["name"] == "h2")["detail"]
    )
    kumo("lab", "fault", "heal", "h2")

    kumo("lab", "fault", "kill-host", "h2")
    assert pids_in_netns(plan.host("h2").netns) == []  # libvirtd, virtlogd, QEMU: all gone
    status = json.loads(kumo("lab", "status", "--json").stdout)
    assert next(n for n in status["nodes"] if n["name"] == "h2")["state"] == "killed"
    kumo("lab", "fault", "heal", "h2")
    kumo("lab", "exec", "h2", "--", "virsh", "version")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--hosts", "0"], "hosts: 0 is out of range; the lab runs 1 to 8 hosts"),
        (["up", "--hosts", "99"], "hosts: 99 is out of range"),
        (["up"], "the lab is already up with 2 hosts"),
        (["fault", "cut", "h9", "public"], "no such node 'h9'"),
        (["fault", "cut", "h1", "wifi"], "network: 'wifi' is not a lab network"),
        (["fault", "explode", "h1"], "unknown fault 'explode'"),
        (["fault", "slow", "h1", "storage", "fast"], "rate: 'fast' is not a rate"),
        (["fault", "partition"], "expected `partition HOST`"),
        (["exec", "h7", "--", "true"], "no such node 'h7'"),
    ],
)
def test_bad_input_refused_and_changes_nothing(args: list[str], message: str) -> None:
    before = json.loads(kumo("lab", "status", "--json").stdout)
    proc = kumo("lab", *args, check=False)
    assert proc.returncode != 0
    assert message in " ".join(proc.stderr.split()), proc.stderr
    after = json.loads(kumo("lab", "status", "--json").stdout)
    assert before == after
