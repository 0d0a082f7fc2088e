"""What must hold after every tick of a simulated world, whatever the faults.

- ``one-host``: no VM's domain runs (or is paused) on two hosts at once; the ground truth is
  what QEMU runs on each host, whether or not its libvirtd answers.
- ``fenced-writer``: no write is accepted from a writer whose fencing token no longer holds
  (kumo.sim.store: checked on each commit as it is accepted).
- ``new-host-start``: no VM starts on a new host while the old one might still run it
  (kumo.sim.runner, which knows each VM's last host: the old host must be fenced, or its live
  agent must have reported the VM down).
- ``hard-rules``: no placement breaks a hard rule: HA hosts, (anti-)affinity, memory.
- ``task-ends``: at the end of a scenario, no task queued or running without a reason.

Each violation names the invariant and the virtual time (tests/unit/test_sim_world.py shows
both caught). Pure: the world hands in what it saw.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from kumo.hypervisor.base import DomainState
from kumo.model.activity import Task
from kumo.model.vm import VMSpec

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


def hard_rules(
    t: float,
    placement: Mapping[str, str],
    specs: Mapping[str, VMSpec],
    memory_mib: Mapping[str, int],
    changed: Collection[str],
) -> list[Violation]:
    """``hard-rules`` over the placements (vm -> host) after the VMs in ``changed`` were
    placed or moved: each of them on one of its HA ``hosts`` (if it names any), with no
    member of its anti-affinity group, with every placed member of its affinity group, on a
    host whose memory holds every VM placed there."""
    out = []
    on: dict[str, list[str]] = {}
    for vm, where in sorted(placement.items()):
        on.setdefault(where, []).append(vm)
    for vm in sorted(changed):
        spec = specs.get(vm)
        if spec is None or vm not in placement:
            continue
        host = placement[vm]
        rules = spec.placement
        group: str | None
        if spec.ha.hosts and host not in spec.ha.hosts:
            out.append(f"vm {vm} placed on {host}, not one of its hosts {', '.join(spec.ha.hosts)}")
        others = [o for o in on[host] if o != vm and o in specs]
        group = rules.anti_affinity
        if group and any(specs[o].placement.anti_affinity == group for o in others):
            out.append(f"vm {vm} placed on {host} with another of anti-affinity group {group}")
        group = rules.affinity
        apart = [
            o
            for o, h in sorted(placement.items())
            if h != host and o in specs and specs[o].placement.affinity == group
        ]
        if group and apart:
            out.append(f"vm {vm} placed on {host} apart from {apart[0]} (affinity {group})")
        used = sum(specs[o].memory_mib for o in on[host] if o in specs)
        if used > memory_mib.get(host, 0):
            out.append(f"host {host} holds {used} MiB of VMs, has {memory_mib.get(host, 0)} MiB")
    return [Violation("hard-rules", t, d) for d in out]


def tasks_unended(t: float, tasks: Iterable[Task]) -> list[Violation]:
    """``task-ends``, at the end of a run: no task still queued or running with no message
    saying why (waiting for a host, a migration slot, …)."""
    return [
        Violation(
            "task-ends",
            t,
            f"task {task.id} ({task.kind} {task.target}) is still {task.state.value} "
            "with no reason in its record",
        )
        for task in sorted(tasks, key=lambda x: x.id)
        if not task.state.done and not task.message
    ]
