"""What must hold after every tick of a simulated world, whatever the faults.

- ``one-host``: no VM's domain runs (or is paused) on two hosts at once; the ground truth is
  what QEMU runs on each host, whether or not its libvirtd answers.
- ``fenced-writer``: no write is accepted from a writer whose fencing token no longer holds
  (kumo.sim.store: checked on each commit as it is accepted).

Each violation names the invariant and the virtual time (tests/unit/test_sim_world.py shows
both caught). Pure: the world hands in what it saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kumo.hypervisor.base import DomainState

ACTIVE = (DomainState.RUNNING, DomainState.PAUSED)


@dataclass(frozen=True)
class Violation:
    invariant: str
    t: float
    detail: str

    def __str__(self) -> str:
        return f"invariant {self.invariant} broken at t={self.t:.3f}: {self.detail}"


class InvariantViolated(AssertionError):
    def __init__(self, violation: Violation) -> None:
        super().__init__(str(violation))
        self.violation = violation


def check(t: float, guests: Mapping[str, Mapping[str, DomainState]]) -> list[Violation]:
    """The ``one-host`` invariant over each host's guests (host -> domain -> state)."""
    where: dict[str, list[str]] = {}
    for host in sorted(guests):
        for vm, state in sorted(guests[host].items()):
            if state in ACTIVE:
                where.setdefault(vm, []).append(host)
    return [
        Violation("one-host", t, f"vm {vm} runs on {' and '.join(hosts)}")
        for vm, hosts in sorted(where.items())
        if len(hosts) > 1
    ]
