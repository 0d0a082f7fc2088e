"""Where a dead host's HA VMs run again, decided in one pass.

Pure: the caller gives the VMs to recover (those of fenced hosts whose policy is ``restart``),
the hosts as the scheduler sees them (fenced and down hosts not ``up``) and the VMs placed on
live hosts; it gets back one decision per VM. VMs are taken highest priority first (then by
name, so a pass is deterministic), each decision using the capacity the earlier ones took, so
when capacity is short the most important VMs get it and the rest wait with the scheduler's
reason. Every hard rule of :func:`kumo.scheduler.placement.place` applies (capacity, allowed
hosts, affinity, anti-affinity, CPU model): nothing is placed unsafely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from kumo.model.ha import HAStatus, RecoveryState
from kumo.scheduler.placement import (
    Chosen,
    Demand,
    HostUsage,
    HostView,
    Placed,
    Policy,
    place,
    usage_of,
)

_NONE = HostUsage()


@dataclass(frozen=True)
class Orphan:
    """An HA VM whose host is fenced: what it asks of a host, and how much it matters."""

    demand: Demand  # with its allowed hosts and preferred host
    priority: int
    was_on: str


@dataclass(frozen=True)
class Restart:
    vm: str
    host: str
    was_on: str
    priority: int


@dataclass(frozen=True)
class Waits:
    """Fits nowhere now: stays ``recovering`` with ``reason`` and is tried again next pass."""

    vm: str
    was_on: str
    priority: int
    reason: str


def recovery_order(orphans: Sequence[Orphan]) -> list[Orphan]:
    """Highest priority first; equal priorities by name."""
    return sorted(orphans, key=lambda o: (-o.priority, o.demand.name))


def plan_recovery(
    orphans: Sequence[Orphan],
    hosts: Sequence[HostView],
    placed: Sequence[Placed],
    policy: Policy | None = None,
) -> list[Restart | Waits]:
    """One decision per orphan, in recovery order (see the module docstring)."""
    live = {h.name for h in hosts if h.up}
    usage = usage_of([p for p in placed if p.host in live])
    out: list[Restart | Waits] = []
    for o in recovery_order(orphans):
        result = place(o.demand, hosts, usage, policy)
        if isinstance(result, Chosen):
            usage[result.host] = usage.get(result.host, _NONE).plus(o.demand)
            out.append(Restart(o.demand.name, result.host, o.was_on, o.priority))
        else:
            out.append(Waits(o.demand.name, o.was_on, o.priority, str(result)))
    return out


class AfterFailedStart(StrEnum):
    RETRY = "retry"  # start it again on the same host
    RELOCATE = "relocate"  # place it on another host (this one excluded)
    ERROR = "error"  # give up: the VM is `error` with the last failure as its reason


def after_failed_start(
    restarts_here: int, relocations: int, max_restart: int = 1, max_relocate: int = 1
) -> AfterFailedStart:
    """Proxmox's start-failure policy. ``restarts_here``: failed starts on the current host
    after the first; ``relocations``: moves to another host made for failed starts so far.
    Retry on the same host ``max_restart`` times, then relocate up to ``max_relocate`` times
    (each new host again gets its retries), then give up."""
    if restarts_here < max_restart:
        return AfterFailedStart.RETRY
    if relocations < max_relocate:
        return AfterFailedStart.RELOCATE
    return AfterFailedStart.ERROR


def answer_failed_start(
    old: HAStatus | None,
    vm: str,
    host: str,
    failure: str,
    max_restart: int,
    max_relocate: int,
    now: float,
) -> tuple[AfterFailedStart, HAStatus]:
    """The leader's answer to ``vm``'s start failing on ``host`` with ``failure``, and the HA
    record that counts it (``old``: the record of the earlier failures, if any). A retry
    counts against this host; a relocation starts the count again on the next host (the
    caller chooses it, away from every host in ``tried``); an error keeps the counts."""
    restarts = old.restarts_here if old else 0
    relocations = old.relocations if old else 0
    tried = old.tried if old else ()
    tried = tried if host in tried else (*tried, host)
    decision = after_failed_start(restarts, relocations, max_restart, max_relocate)
    if decision == AfterFailedStart.RETRY:
        restarts += 1
        reason = f"{failure}; retrying on {host} ({restarts} of {max_restart})"
    elif decision == AfterFailedStart.RELOCATE:
        restarts, relocations = 0, relocations + 1
        reason = f"{failure}; moving to another host ({relocations} of {max_relocate})"
    else:
        reason = (
            f"{failure}; gave up: {max_restart} restart(s) per host and {max_relocate} "
            f"relocation(s) used (tried {', '.join(tried)})"
        )
    record = HAStatus(
        vm=vm,
        state=RecoveryState.ERROR
        if decision == AfterFailedStart.ERROR
        else RecoveryState.RECOVERING,
        reason=reason,
        since=old.since if old else now,
        failed_host=old.failed_host if old else host,
        restarts_here=restarts,
        relocations=relocations,
        tried=tried,
    )
    return decision, record
