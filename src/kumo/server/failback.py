"""Failback: an HA VM with ``failback`` and a ``preferred`` host, running elsewhere (HA
recovered it, or it was moved), goes back to its preferred host by live migration once that
host has been up for ``HASettings.stabilisation_s``.

"Up" is: its agent holds a lease, it is not fenced, it is schedulable and not in maintenance.
The leader counts from when it first saw the host up, on its own monotonic clock (as it
counts a lease's absence before fencing): a host that flaps starts the count again, and a
new leader counts anew (later, never sooner). The move is an ordinary migration
(:meth:`kumo.server.migrations.Migrations.migrate`): the scheduler's rules decide whether the
preferred host can take the VM, the cluster's migration limits queue it, one migration per
VM at a time. A VM HA is still working on (a record in ``/kumo/ha/``) or that does not run
(its host's report says otherwise) is left alone.
"""

from __future__ import annotations

import logging

from kumo.model.ha import HAMode
from kumo.model.vm import Migration, Placement, Power, VMSpec, VMState, VMStatus
from kumo.server.errors import ApiError
from kumo.server.migrations import Migrations
from kumo.server.placement import Placer
from kumo.server.state import ClusterState
from kumo.store import keys
from kumo.store.lease import NO_FENCE, Fence

log = logging.getLogger("kumo.ha")


def wants_failback(spec: VMSpec) -> bool:
    return (
        spec.ha.mode == HAMode.RESTART
        and spec.ha.failback
        and spec.ha.preferred is not None
        and spec.power == Power.RUNNING
        and not spec.deleting
    )


class Failback:
    def __init__(self, state: ClusterState, placer: Placer, actor: str) -> None:
        self.state = state
        self.migrations = Migrations(state, placer)
        self.actor = actor
        self.up_since: dict[str, float] = {}  # host -> when this leader first saw it up
        self.said: dict[str, str] = {}  # vm -> why it stays, as last recorded (once each)

    def watch_hosts(self, now: float) -> None:
        """Note when each host came up (and forget those that are not up)."""
        st = self.state
        fenced = {e.key[len(keys.FENCED) :] for e in st.view.range(keys.FENCED)}
        for h in st.sched_hosts():
            if h.up and h.schedulable and h.name not in fenced:
                self.up_since.setdefault(h.name, now)
            else:
                self.up_since.pop(h.name, None)

    def run(self, now: float, stabilisation_s: float, fence: Fence = NO_FENCE) -> list[str]:
        """One pass at ``now`` (monotonic): ask to migrate each VM due to go back. Returns
        the VMs whose migration was asked for."""
        st = self.state
        self.watch_hosts(now)
        specs = [s for s, _ in st.view.models(VMSpec, keys.VMS).values() if wants_failback(s)]
        if not specs:
            return []
        placements = st.view.models(Placement, keys.PLACEMENT)
        statuses = st.view.models(VMStatus, keys.VMSTATUS)
        migrating = st.view.models(Migration, keys.MIGRATIONS)
        records = {e.key[len(keys.HA) :] for e in st.view.range(keys.HA)}
        asked = []
        for spec in sorted(specs, key=lambda s: (-s.ha.priority, s.name)):
            vm, home = spec.name, spec.ha.preferred
            placed = placements[vm][0].host if vm in placements else None
            status = statuses[vm][0] if vm in statuses else None
            if (
                home is None
                or placed in (None, home)
                or vm in migrating
                or vm in records
                or status is None
                or status.host != placed
                or status.state != VMState.RUNNING
            ):
                continue
            since = self.up_since.get(home)
            if since is None or now - since < stabilisation_s:
                continue
            if self._migrate(vm, placed or "", home, now - since, fence):
                asked.append(vm)
        return asked

    def _migrate(self, vm: str, placed: str, home: str, up_for: float, fence: Fence) -> bool:
        st = self.state
        try:
            task = self.migrations.migrate(vm, home, self.actor, fence=fence)
        except ApiError as exc:
            why = f"stays on {placed}: its preferred host {home} cannot take it now: {exc}"
            if self.said.get(vm) != why:  # recorded once, not on every pass
                self.said[vm] = why
                st.commit([*fence.compares], [st.event(self.actor, f"vm/{vm}", "failback", why)])
            return False
        self.said.pop(vm, None)
        why = (
            f"back to its preferred host {home} by live migration ({task.id}): "
            f"{home} has been up for {up_for:.0f} s"
        )
        st.commit([*fence.compares], [st.event(self.actor, f"vm/{vm}", "failback", why)])
        log.info("vm %s: failback %s -> %s (%s)", vm, placed, home, task.id)
        return True
