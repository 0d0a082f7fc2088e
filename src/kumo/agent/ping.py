"""The path monitor's pings (agent/paths.py judges them): ICMP echo with icmplib, every
target of a round at once, one echo each, answered within a timeout below the interval.

icmplib builds the ICMP packets itself on a raw socket (``privileged``): the agent runs as
root. A target that does not answer, or cannot be sent to (no route, the interface down), is
a miss; a probe that cannot ping at all (no raw socket) raises :class:`ProbeError`, which the
agent logs without judging the round: a broken prober is not a broken path.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from typing import Protocol

import icmplib  # type: ignore[import-untyped]


class ProbeError(Exception):
    """Pinging itself failed (not a target that did not answer); the message says why."""


class Probe(Protocol):
    def __call__(self, targets: Sequence[str], timeout_s: float) -> Mapping[str, bool]:
        """Ping each of ``targets`` once, all at once: which answered within ``timeout_s``."""
        ...


def icmp_probe(targets: Sequence[str], timeout_s: float) -> Mapping[str, bool]:
    if not targets:
        return {}
    try:
        hosts = icmplib.multiping(
            list(targets), count=1, interval=0, timeout=timeout_s, privileged=True
        )
    except (icmplib.ICMPLibError, OSError) as exc:
        raise ProbeError(f"cannot ping {', '.join(targets)}: {exc}") from exc
    return {t: bool(h.is_alive) for t, h in zip(targets, hosts, strict=True)}


def route_problem(address: str) -> str:
    """Why pinging ``address`` would not test a path of this host ("" when it would): the
    kernel's route to it (``ip route get``) goes through a gateway (the address is not on
    any network of this host: its answers would prove the gateway's path, not this one's),
    or the address is this host's own. A lookup that cannot run says nothing ("")."""
    try:
        out = subprocess.run(
            ["ip", "-j", "route", "get", address],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if out.returncode != 0:
        return f"no route to it ({out.stderr.strip() or 'ip route get failed'})"
    try:
        route = json.loads(out.stdout)[0]
    except (ValueError, IndexError, KeyError):
        return ""
    if route.get("type") == "local" or route.get("dev") == "lo":
        return "it is this host's own address"
    if route.get("gateway"):
        return f"not on any network of this host (reached through {route['gateway']})"
    return ""
