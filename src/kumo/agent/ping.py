"""The path monitor's pings (agent/paths.py judges them): ICMP echo with icmplib, every
target of a round at once, one echo each, answered within a timeout below the interval.

icmplib builds the ICMP packets itself on a raw socket (``privileged``): the agent runs as
root. A target that does not answer, or cannot be sent to (no route, the interface down), is
a miss; a probe that cannot ping at all (no raw socket) raises :class:`ProbeError`, which the
agent logs without judging the round: a broken prober is not a broken path.
"""

from __future__ import annotations

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
