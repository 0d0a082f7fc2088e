"""Faults the lab injects, each undone by ``heal``.

- ``kill-host H``: every process of the host dies at once (SIGKILL), like pulling its power.
- ``kill-libvirtd H``: libvirtd alone dies (SIGKILL); QEMU and virtlogd go on, as in a crash.
- ``kill-agent H``: the kumo agent alone dies (SIGKILL).
- ``cut H public|storage``: the switch port goes down; the host sees its carrier drop.
- ``partition H``: nftables in the host drops all traffic to and from ``ctl`` (etcd), links stay up.
- ``slow H NETWORK RATE``: a tc token bucket (tbf) on both ends of the host's link.
- ``heal H``: undo all of the above and power a killed host back on.
- ``router-down`` / ``router-up`` (``heal router``): nftables in the router's namespace drops
  every packet on its public port: it stops answering (pings, DHCP); its links stay up.
- ``nas-down`` / ``nas-up`` (``heal nas1``): the same in the NAS's namespace, on its storage
  port: its pings and its NBD server stop answering. Disks of the ``nbd`` pool cross the
  storage network (QEMU's NBD client), so their guests pause on I/O errors; the ``shared``
  pool's are bind-mounted, so those guests go on writing.
- ``kill-etcd`` / ``kill-leader`` (``heal ctl``): SIGKILL to etcd, or to the ``kumo server``
  replica that leads; ``heal ctl`` starts etcd again on its data, and the replicas killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kumo.lab import control_plane
from kumo.lab.hypervisor_host import libvirtd_answers, start_daemons, wait_libvirtd
from kumo.lab.namespaces import enter, kill_netns, pids_in_netns
from kumo.lab.plan import SWITCH_NETNS, LabPlan, LabPlanError, Network, Node
from kumo.lab.shell import run

FAULT_TABLE = "kumo_fault"
RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
FAULT_KINDS = ("kill-host", "kill-libvirtd", "kill-agent", "cut", "partition", "slow", "heal")
# The router's and the NAS's only port: drop everything but loopback, both ways.
_SILENCE = (
    f"table inet {FAULT_TABLE} {{\n"
    '  chain in { type filter hook input priority 0; iifname != "lo" drop; }\n'
    '  chain out { type filter hook output priority 0; oifname != "lo" drop; }\n'
    "}\n"
)


def parse_network(value: str) -> Network:
    try:
        return Network(value)
    except ValueError:
        raise LabPlanError(
            f"network: {value!r} is not a lab network; use public or storage"
        ) from None


def parse_rate(value: str) -> str:
    """A tc rate such as ``80mbit`` (units: bit, kbit, mbit, gbit, bps, kbps, mbps, gbps)."""
    rate = value.strip().lower()
    m = RATE_RE.fullmatch(rate)
    if not m or float(m.group(1)) <= 0:
        raise LabPlanError(
            f"rate: {value!r} is not a rate; use a positive number with a tc unit, e.g. 80mbit"
        )
    return rate


def kill_host(host: Node) -> None:
    kill_netns(host.netns)


def _matching(host: Node, match: Callable[[list[bytes]], bool]) -> list[int]:
    found = []
    for pid in pids_in_netns(host.netns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if match(cmd):
            found.append(pid)
    return found


def _named(host: Node, program: bytes) -> list[int]:
    return _matching(host, lambda cmd: os.path.basename(cmd[0]) == program)


def _kill(pids: list[int]) -> int:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def kill_libvirtd(host: Node) -> int:
    return _kill(_named(host, b"libvirtd"))


def kill_agent(host: Node) -> int:
    return _kill(_matching(host, lambda cmd: b"kumo" in cmd and b"agent" in cmd))


def cut(plan: LabPlan, host: Node, network: Network) -> None:
    port = host.port(network)
    assert port is not None
    run(["ip", "-n", SWITCH_NETNS, "link", "set", port.switch_link, "down"])


def partition(plan: LabPlan, host: Node) -> None:
    ctl = plan.controller.address(Network.STORAGE)
    rules = (
        f"table inet {FAULT_TABLE} {{\n"
        f"  chain out {{ type filter hook output priority 0; ip daddr {ctl} drop; }}\n"
        f"  chain in {{ type filter hook input priority 0; ip saddr {ctl} drop; }}\n"
        "}\n"
    )
    run(["ip", "netns", "exec", host.netns, "nft", "-f", "-"], input=rules)


def slow(host: Node, network: Network, rate: str) -> None:
    port = host.port(network)
    assert port is not None
    tbf = ["tbf", "rate", rate, "burst", "64kb", "latency", "400ms"]
    run(
        [
            "ip",
            "netns",
            "exec",
            SWITCH_NETNS,
            "tc",
            "qdisc",
            "replace",
            "dev",
            port.switch_link,
            "root",
            *tbf,
        ]
    )
    run(
        [
            "ip",
            "netns",
            "exec",
            host.netns,
            "tc",
            "qdisc",
            "replace",
            "dev",
            port.node_link,
            "root",
            *tbf,
        ]
    )


def heal(plan: LabPlan, host: Node, domain_type: str) -> list[str]:
    """Undo every fault on ``host``; returns what was undone."""
    done = []
    state = host_faults(host)
    for port in host.ports:
        if port.network.value in state.cut:
            run(["ip", "-n", SWITCH_NETNS, "link", "set", port.switch_link, "up"])
            done.append(f"reconnected {port.network}")
        if port.network.value in state.slow:
            run(
                [
                    "ip",
                    "netns",
                    "exec",
                    SWITCH_NETNS,
                    "tc",
                    "qdisc",
                    "del",
                    "dev",
                    port.switch_link,
                    "root",
                ],
                check=False,
            )
            run(
                [
                    "ip",
                    "netns",
                    "exec",
                    host.netns,
                    "tc",
                    "qdisc",
                    "del",
                    "dev",
                    port.node_link,
                    "root",
                ],
                check=False,
            )
            done.append(f"unshaped {port.network}")
    if state.partitioned:
        run(["ip", "netns", "exec", host.netns, "nft", "delete", "table", "inet", FAULT_TABLE])
        done.append("rejoined etcd")
    if state.powered_off:
        if _named(host, b"virtlogd"):  # only libvirtd had died
            run([*enter(host.netns, host.name), "libvirtd", "-d", "--listen"])
            done.append("libvirtd restarted")
        else:
            start_daemons(host)
            done.append("powered on (libvirtd, virtlogd, virtlockd)")
        wait_libvirtd([host])
    if not control_plane.watchdog_running(host):
        control_plane.start_watchdog(host)
        done.append("kumo watchdog started")
    if not control_plane.agent_running(host):
        control_plane.start_agent(plan, host, domain_type)
        done.append("kumo agent started")
    return done


def _has_fault_table(node: Node) -> bool:
    tables = run(["ip", "netns", "exec", node.netns, "nft", "list", "tables"], check=False)
    return FAULT_TABLE in tables.stdout


def silence(node: Node) -> bool:
    """The router or the NAS stops answering on its network; False if it already had."""
    if _has_fault_table(node):
        return False
    run(["ip", "netns", "exec", node.netns, "nft", "-f", "-"], input=_SILENCE)
    return True


def unsilence(node: Node) -> bool:
    """Undo :func:`silence`; False if there was nothing to undo."""
    if not _has_fault_table(node):
        return False
    run(["ip", "netns", "exec", node.netns, "nft", "delete", "table", "inet", FAULT_TABLE])
    return True


def silenced(node: Node) -> bool:
    """Whether the router or the NAS is silenced now (read from its nftables)."""
    return _has_fault_table(node)


@dataclass(frozen=True)
class HostFaults:
    """The faults a host has now, read from the system (not from a record of ours)."""

    powered_off: bool
    cut: tuple[str, ...]
    partitioned: bool
    slow: dict[str, str]

    def describe(self) -> str:
        parts = []
        if self.powered_off:
            parts.append("killed")
        parts.extend(f"{n} cut" for n in self.cut)
        if self.partitioned:
            parts.append("partitioned from etcd")
        parts.extend(f"{n} slowed to {r}" for n, r in self.slow.items())
        return ", ".join(parts) or "none"


def host_faults(host: Node) -> HostFaults:
    cut_nets = []
    slow_nets: dict[str, str] = {}
    for port in host.ports:
        info = json.loads(
            run(["ip", "-n", SWITCH_NETNS, "-j", "link", "show", port.switch_link]).stdout
        )[0]
        if "UP" not in info.get("flags", []):
            cut_nets.append(port.network.value)
        qd = json.loads(
            run(
                [
                    "ip",
                    "netns",
                    "exec",
                    SWITCH_NETNS,
                    "tc",
                    "-j",
                    "qdisc",
                    "show",
                    "dev",
                    port.switch_link,
                ]
            ).stdout
            or "[]"
        )
        for q in qd:
            if q.get("kind") == "tbf":
                rate = q.get("options", {}).get("rate")
                slow_nets[port.network.value] = _rate_text(rate)
    tables = run(["ip", "netns", "exec", host.netns, "nft", "list", "tables"], check=False).stdout
    return HostFaults(
        powered_off=not pids_in_netns(host.netns) or not libvirtd_answers(host),
        cut=tuple(cut_nets),
        partitioned=FAULT_TABLE in tables,
        slow=slow_nets,
    )


def _rate_text(rate: object) -> str:
    if isinstance(rate, int | float):
        bits = float(rate) * 8  # tc -j reports bytes per second
        for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
            if bits >= scale:
                return f"{bits / scale:g}{unit}"
        return f"{bits:g}bit"
    return str(rate)
