"""Which kumo domains on this host belong elsewhere: pure, from what libvirt shows here and
what the store says about each VM. The agent stops and undefines a stray, never touching its
disk (the disk belongs to the VM's real host), and records an event.

Rules (tests/unit/test_strays.py):
- only kumo's domains count (``Domain.kumo_vm``); others are never touched;
- a VM this host's migrator is moving, or that has a migration record from or to this host,
  is not stray: during a live migration the domain exists on both hosts (source running,
  target incoming and paused);
- a VM whose placement read is older than this host's own switch-over of it (the migrator's
  ``moved_away``) is not judged on that stale placement;
- a VM placed on this host is the reconcile loop's, not a stray;
- a VM placed on another host is stray here;
- a VM with no placement is left alone and only reported (``Verdict.UNKNOWN``): an unplaced
  VM may be placed here next, and a domain whose VM is not in the store at all may mean the
  store was emptied or restored from an old backup, where stopping every such guest would
  be a disaster. An operator removes those by hand (``virsh destroy``/``undefine``).

The agent decides on the snapshot of its pass, then decides again on fresh reads of the
migration and then the placement (in that order, after listing the domains) before acting:
a migration that ended between the snapshot's reads can then no longer look like a stray.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from kumo.hypervisor.base import Domain, DomainState


class Verdict(StrEnum):
    STRAY = "stray"  # placed on another host: stop and undefine it here
    UNKNOWN = "unknown"  # no placement: left alone, reported


@dataclass(frozen=True)
class Seen:
    """What the store says about one VM, as far as strays go."""

    placed_on: str | None  # its placement's host; None: no placement
    placement_rev: int = 0  # the placement's mod revision (0: none)
    migration: tuple[str, str] | None = None  # (source, target) of its migration record
    exists: bool = True  # its spec is in the store


@dataclass(frozen=True)
class Stray:
    vm: str
    domain: str
    verdict: Verdict
    placed_on: str | None
    running: bool  # needs a destroy before the undefine

    def message(self, host: str) -> str:
        if self.verdict == Verdict.STRAY:
            done = "stopped and undefined" if self.running else "undefined"
            return f"stray domain of {self.vm} (placed on {self.placed_on}) {done} on {host}"
        why = "is not placed anywhere" if self.placed_on is None else "is unknown"
        return (
            f"kumo domain {self.domain} on {host}: its VM {self.vm} {why}; left alone "
            "(remove it with virsh if it is not wanted)"
        )


def judge(
    host: str,
    dom: Domain,
    seen: Seen,
    moving: frozenset[str] = frozenset(),
    moved_away: Mapping[str, int] | None = None,
) -> Stray | None:
    """The verdict on one domain of this ``host``; None when it is not a stray.
    ``moving``: VMs this host's migrator is migrating now; ``moved_away``: VM -> the
    placement revision of this host's own switch-over of it."""
    vm = dom.kumo_vm
    if vm is None or vm in moving:
        return None
    if seen.migration is not None and host in seen.migration:
        return None
    if seen.placed_on is not None and seen.placement_rev < (moved_away or {}).get(vm, 0):
        return None
    if seen.placed_on == host:
        return None
    verdict = Verdict.UNKNOWN if seen.placed_on is None or not seen.exists else Verdict.STRAY
    running = dom.state not in (DomainState.SHUTOFF, DomainState.CRASHED)
    return Stray(vm, dom.name, verdict, seen.placed_on, running)


def strays(
    host: str,
    domains: list[Domain],
    seen: Mapping[str, Seen],
    moving: frozenset[str] = frozenset(),
    moved_away: Mapping[str, int] | None = None,
) -> list[Stray]:
    """Every verdict on this host's kumo domains, by domain name; a VM missing from ``seen``
    has no placement, no migration and no spec."""
    out = []
    for dom in sorted(domains, key=lambda d: d.name):
        if dom.kumo_vm is None:
            continue
        found = judge(
            host, dom, seen.get(dom.kumo_vm, Seen(None, exists=False)), moving, moved_away
        )
        if found is not None:
            out.append(found)
    return out
