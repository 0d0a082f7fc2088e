"""Cluster services of the lab: etcd in ``ctl`` and the public network's DHCP in ``router``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from kumo.lab.namespaces import STATE_DIR, enter, pids_in_netns
from kumo.lab.plan import DHCP_RANGE, ETCD_CLIENT_PORT, LabPlan, Network
from kumo.lab.shell import LabError, run


def spawn(args: list[str], log: str) -> None:
    """Start a daemon detached from us; it lives in its namespace until killed."""
    with open(log, "ab") as out:
        subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def start_etcd(plan: LabPlan, timeout: float = 30) -> None:
    ctl = plan.controller
    data = STATE_DIR / "ctl" / "etcd"
    data.mkdir(parents=True, exist_ok=True)
    ip = ctl.address(Network.STORAGE)
    spawn(
        [
            *enter(ctl.netns),
            "etcd",
            "--name",
            "ctl",
            "--data-dir",
            str(data),
            "--listen-client-urls",
            f"http://{ip}:{ETCD_CLIENT_PORT},http://127.0.0.1:{ETCD_CLIENT_PORT}",
            "--advertise-client-urls",
            plan.etcd_endpoint,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "ctl=http://127.0.0.1:2380",
        ],
        str(STATE_DIR / "ctl" / "etcd.log"),
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if etcd_healthy(plan):
            return
        time.sleep(0.3)
    raise LabError(
        f"etcd in ctl did not become healthy within {timeout:.0f} s "
        f"(log: {STATE_DIR / 'ctl' / 'etcd.log'})"
    )


def etcd_healthy(plan: LabPlan) -> bool:
    """Asked from the root namespace, through the lab's veth: what a client sees."""
    proc = run(
        [
            "etcdctl",
            f"--endpoints={plan.etcd_endpoint}",
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "endpoint",
            "health",
        ],
        check=False,
        timeout=10,
    )
    return proc.returncode == 0


def etcd_pids(plan: LabPlan) -> list[int]:
    """etcd's processes in ``ctl`` (read from /proc: what runs, not what we started)."""
    found = []
    for pid in pids_in_netns(plan.controller.netns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.path.basename(cmd[0]) == b"etcd":
            found.append(pid)
    return found


def kill_etcd(plan: LabPlan) -> int:
    """SIGKILL to etcd (its data directory stays: :func:`start_etcd` starts it on it again)."""
    pids = etcd_pids(plan)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while etcd_pids(plan) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(pids)


def start_dhcp(plan: LabPlan) -> None:
    """dnsmasq as the public network's DHCP server, on the router (as a site router would).
    DNS is off (port 0): the lab resolves nothing."""
    router = plan.router
    d = STATE_DIR / "router"
    d.mkdir(parents=True, exist_ok=True)
    port = router.port(Network.PUBLIC)
    assert port is not None
    run(
        [
            *enter(router.netns),
            "dnsmasq",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--group=root",
            f"--interface={port.node_link}",
            "--bind-interfaces",
            "--except-interface=lo",
            f"--dhcp-range={DHCP_RANGE[0]},{DHCP_RANGE[1]},255.255.255.0,12h",
            f"--dhcp-option=option:router,{router.address(Network.PUBLIC)}",
            f"--dhcp-leasefile={d / 'dnsmasq.leases'}",
            f"--pid-file={d / 'dnsmasq.pid'}",
            f"--log-facility={d / 'dnsmasq.log'}",
            "--log-dhcp",
        ]
    )


NBD_PORT = 10809


def nas_export() -> Path:
    """nas1's export directory: bind-mounted on every host at ``SHARED_POOL_PATH``."""
    return STATE_DIR / "nas1" / "export"


def nbd_export() -> Path:
    """The NAS's NBD pool: a directory of the NAS's export (the hosts see it at
    ``SHARED_POOL_PATH/nbd``), whose ``vms/`` files ``nbdkit`` serves by name."""
    return nas_export() / "nbd"


def start_nbd(plan: LabPlan) -> None:
    """nbdkit on nas1's storage address: the disks of the lab's ``nbd`` pool travel over
    the storage network, so a NAS outage (``nas-down``) reaches the guests as on a real
    NAS. It forks and writes its pid file once it listens."""
    (nbd_export() / "vms").mkdir(parents=True, exist_ok=True)
    d = STATE_DIR / "nas1"
    run(
        [
            *enter(plan.nas.netns),
            "nbdkit",
            "--ipaddr",
            plan.nas.address(Network.STORAGE),
            "--port",
            str(NBD_PORT),
            "--pidfile",
            str(d / "nbdkit.pid"),
            "file",
            f"dir={nbd_export() / 'vms'}",
        ]
    )


def nbd_running() -> bool:
    return _pid_running(STATE_DIR / "nas1" / "nbdkit.pid", b"nbdkit")


def _pid_running(pidfile: Path, name: bytes) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        return name in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


def dhcp_running(plan: LabPlan) -> bool:
    return _pid_running(STATE_DIR / "router" / "dnsmasq.pid", b"dnsmasq")
