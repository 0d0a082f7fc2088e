"""Network, mount and UTS namespaces of lab nodes, and the processes inside them.

A hypervisor host is a network namespace (``ip netns``) plus a mount and a UTS namespace
kept alive by bind mounts under ``RUN_DIR/ns`` (as ``ip netns`` keeps network namespaces),
so commands can enter a host that has no process left (after ``fault kill-host``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from kumo.lab.shell import LabError, run

RUN_DIR = Path(os.environ.get("KUMO_LAB_RUN", "/run/kumo-lab"))
STATE_DIR = Path(os.environ.get("KUMO_LAB_STATE", "/var/lib/kumo-lab"))
NS_DIR = RUN_DIR / "ns"
NETNS_DIR = Path("/run/netns")


def netns_list() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def netns_add(name: str) -> None:
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def pids_in_netns(name: str) -> list[int]:
    """Every process whose network namespace is ``name`` (a host's whole 'machine')."""
    try:
        target = os.stat(NETNS_DIR / name).st_ino
    except FileNotFoundError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == target:
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def kill_netns(name: str, timeout: float = 15) -> None:
    """SIGKILL every process in the namespace, at once, and wait until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        pids = pids_in_netns(name)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} in namespace {name} survived SIGKILL")
        time.sleep(0.05)


def _prepare_ns_dir() -> None:
    """Namespace bind mounts need a private mount to live on."""
    NS_DIR.mkdir(parents=True, exist_ok=True)
    if not is_mountpoint(NS_DIR):
        run(["mount", "--bind", str(NS_DIR), str(NS_DIR)])
        run(["mount", "--make-private", str(NS_DIR)])


def is_mountpoint(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def mounts_under(prefix: str) -> list[str]:
    """Mount points in the root mount namespace at or below ``prefix`` (deepest first)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    mine = [p for p in points if p == prefix or p.startswith(prefix.rstrip("/") + "/")]
    return sorted(set(mine), key=len, reverse=True)


def host_ns_files(node: str) -> tuple[Path, Path]:
    return NS_DIR / f"{node}.mnt", NS_DIR / f"{node}.uts"


def create_host_namespaces(node: str, netns: str, setup_script: str) -> None:
    """Make ``node``'s persistent mount + UTS namespaces inside ``netns`` and run
    ``setup_script`` (sh) in them once, to bind its private directories."""
    _prepare_ns_dir()
    mnt, uts = host_ns_files(node)
    for f in (mnt, uts):
        f.touch()
    # nsenter, not `ip netns exec`: unshare must bind the namespace files in the root mount
    # namespace, and `ip netns exec` would run it in a throw-away one of its own.
    # /sys is mounted afresh so that it shows the host's network devices (libvirt reads
    # /sys/class/net); the cgroup tree stays out of the host, as under `ip netns exec`.
    run(
        [
            "nsenter",
            f"--net={NETNS_DIR / netns}",
            "unshare",
            f"--mount={mnt}",
            f"--uts={uts}",
            "--propagation",
            "private",
            "sh",
            "-euc",
            "umount -l /sys; mount -t sysfs sysfs /sys\n" + setup_script,
        ]
    )


def host_ns_exist(node: str) -> bool:
    mnt, _ = host_ns_files(node)
    return is_mountpoint(mnt)


def enter(netns: str, node: str | None = None) -> list[str]:
    """A command prefix that runs inside a node: its network namespace and, for a
    hypervisor host, its mount and UTS namespaces."""
    if node is not None and host_ns_exist(node):
        mnt, uts = host_ns_files(node)
        return ["nsenter", f"--net={NETNS_DIR / netns}", f"--mount={mnt}", f"--uts={uts}", "--"]
    return ["ip", "netns", "exec", netns]


def release_host_namespaces(node: str) -> None:
    for f in host_ns_files(node):
        if is_mountpoint(f):
            run(["umount", "-l", str(f)])
        f.unlink(missing_ok=True)


def release_ns_dir() -> None:
    if is_mountpoint(NS_DIR):
        run(["umount", "-l", str(NS_DIR)])
