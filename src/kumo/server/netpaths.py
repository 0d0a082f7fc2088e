"""Network-path failover, the leader's half: the report's Pacemaker ``ping`` rule, built in.

Each agent pings its public network's router and its storage network's NAS and reports the
two paths, dampened (agent/paths.py, ``/kumo/paths/<host>``). Each pass the leader judges:

- a host whose path is **down while most other up hosts have it** (strictly more than half
  of the other up hosts that report the path say it is up) is the one cut off: it is marked
  ``degraded`` (``/kumo/degraded/<host>``): unschedulable, shown by ``kumo host list`` with
  the reason. When the lost path is the public one, its running VMs with ``ha: restart`` are
  live-migrated away over the storage network, highest priority first, through the
  migration queue and its limits; each task's reason names the path and since when. When
  the lost path is the storage path, nothing can move (migrations cross it): the VMs stay,
  paused on I/O if their disks are on the NAS; if the host's lease goes too (etcd is reached
  over that network), fencing and recovery take over (kumo.server.ha).
- when **no** other up host has the path either (the router or the NAS is down for
  everyone), nothing moves: an event says so, once per outage.
- a degraded host whose path is up again (the agent's dampening already asked for some
  seconds of answers) is schedulable again at once; VMs with ``failback`` and a preferred
  host return after the host has been up for the stabilisation period (kumo.server.failback
  counts it from here), the others stay where they are.

A link that flaps faster than the agent's dampening is seen down once and never up in
between: its VMs move once, and nothing moves back until it is steadily up.

A VM whose move failed (no target would take it, the migration failed or was cancelled)
is asked to move again after ``RETRY_S``, then after twice as long each time, up to
``RETRY_MAX_S``: a VM that cannot leave does not start a migration every pass. The count
starts again when the VM leaves the host or the host is no longer degraded.

Pure decisions (:func:`judge`) and the pass that carries them out (:class:`NetPaths`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from kumo.model.ha import HAMode
from kumo.model.host import Degraded, HostPaths, HostRecord, NetPath, PathState
from kumo.model.vm import Migration, Placement, Power, VMSpec, VMState, VMStatus
from kumo.server.errors import ApiError
from kumo.server.migrations import Migrations
from kumo.server.state import ClusterState
from kumo.store import keys
from kumo.store.base import Compare, Delete, Put
from kumo.store.lease import NO_FENCE, Fence
from kumo.store.records import put

log = logging.getLogger("kumo.netpaths")


RETRY_S = 10.0  # the wait after a first failed path-failover move; it doubles each time
RETRY_MAX_S = 120.0


def retry_wait(tries: int) -> float:
    """How long to wait after ``tries`` (≥ 1) asked moves of a VM that is still there."""
    return min(RETRY_MAX_S, RETRY_S * 2.0 ** (tries - 1))


@dataclass(frozen=True)
class Verdict:
    degrade: dict[str, NetPath]  # host -> the path it alone lost (storage before public)
    everywhere: tuple[NetPath, ...]  # paths every reporting up host lost: nothing moves


def judge(paths: dict[str, HostPaths]) -> Verdict:
    """From the paths of the up hosts (their agents' reports), which hosts are cut off and
    which paths are down for everyone."""
    degrade: dict[str, NetPath] = {}
    everywhere = []
    # storage first: a host that lost both is marked for its storage path, and nothing is
    # moved (migrations cross the storage network); fencing takes over if its lease goes
    for net in (NetPath.STORAGE, NetPath.PUBLIC):
        known = {h: p.path(net).state for h, p in paths.items()}
        known = {h: s for h, s in known.items() if s != PathState.UNKNOWN}
        down = sorted(h for h, s in known.items() if s == PathState.DOWN)
        if down and len(down) == len(known) and len(known) > 1:
            everywhere.append(net)
            continue
        for h in down:
            others = [s for o, s in known.items() if o != h]
            up = sum(1 for s in others if s == PathState.UP)
            if others and 2 * up > len(others):
                degrade.setdefault(h, net)
    return Verdict(degrade, tuple(everywhere))


def _when(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + " UTC"


class NetPaths:
    def __init__(self, state: ClusterState, migrations: Migrations, actor: str) -> None:
        self.state = state
        self.migrations = migrations
        self.actor = actor
        self.said_everywhere: set[NetPath] = set()  # outages for everyone, said once each
        self.said: dict[str, str] = {}  # vm -> why it could not be moved, said once
        # vm -> (moves asked while it stays on a degraded host, when the last was: monotonic)
        self.tries: dict[str, tuple[int, float]] = {}

    def run(self, fence: Fence = NO_FENCE) -> list[str]:
        """One pass: mark and unmark degraded hosts, move the VMs off those that lost their
        public path. Returns the VMs whose migration was asked for."""
        st = self.state
        st.view.sync()
        alive = st.alive()
        paths = {h: p for h, (p, _) in st.view.models(HostPaths, keys.PATHS).items() if h in alive}
        marks = st.view.models(Degraded, keys.DEGRADED)
        verdict = judge(paths)
        self._say_everywhere(verdict, fence)
        for host, net in sorted(verdict.degrade.items()):
            if host not in marks:
                self._mark(host, net, paths[host], len(paths) - 1, fence)
        for host, (mark, rev) in sorted(marks.items()):
            # judged again every pass: a host is degraded only while the rule holds (its
            # path back, unknown, or lost by most hosts: the mark goes); a host that is
            # down keeps its mark until its agent reports again
            if host in paths and verdict.degrade.get(host) != mark.path:
                self._unmark(host, mark, rev, paths[host], fence)
            elif host not in st.view.models(HostRecord, keys.HOSTS):
                self._unmark(host, mark, rev, None, fence)  # the host was removed
        asked = []
        evacuating = {h for h, net in verdict.degrade.items() if net == NetPath.PUBLIC}
        placements = st.view.models(Placement, keys.PLACEMENT)
        self.tries = {  # forgotten once the VM left the host, or the host is not degraded
            vm: t
            for vm, t in self.tries.items()
            if vm in placements and placements[vm][0].host in evacuating
        }
        for host in sorted(evacuating):
            asked += self._evacuate(host, NetPath.PUBLIC, paths[host].public.since, fence)
        return asked

    def _say_everywhere(self, verdict: Verdict, fence: Fence) -> None:
        st = self.state
        for net in verdict.everywhere:
            if net not in self.said_everywhere:
                what = "router" if net == NetPath.PUBLIC else "NAS"
                msg = (
                    f"every up host lost its {net} path (the {what} is down for everyone?): "
                    "nothing is moved"
                )
                log.warning(msg)
                st.commit([*fence.compares], [st.event(self.actor, "cluster", "path", msg)])
        for net in self.said_everywhere - set(verdict.everywhere):
            msg = f"the {net} path is back on some hosts"
            st.commit([*fence.compares], [st.event(self.actor, "cluster", "path", msg)])
        self.said_everywhere = set(verdict.everywhere)

    def _mark(self, host: str, net: NetPath, paths: HostPaths, others: int, fence: Fence) -> None:
        st = self.state
        p = paths.path(net)
        moves = (
            "its HA VMs move away"
            if net == NetPath.PUBLIC
            else "its VMs stay (migrations need the storage network)"
        )
        reason = (
            f"{net} path of {host} down since {_when(p.since)}"
            + (f" ({p.detail})" if p.detail else "")
            + f"; the other up hosts have it ({others})"
        )
        mark = Degraded(host=host, path=net, since=p.since, reason=reason, at=st.clock.now())
        ok = st.commit(
            [*fence.compares, Compare(keys.DEGRADED + host, 0)],
            [
                put(keys.DEGRADED + host, mark),
                st.event(
                    self.actor, f"host/{host}", "degraded", f"{reason}: unschedulable, {moves}"
                ),
            ],
        )
        if ok is None:
            fence.check(st.store)
        else:
            log.warning("host %s degraded: %s", host, reason)

    def _unmark(
        self, host: str, mark: Degraded, rev: int, paths: HostPaths | None, fence: Fence
    ) -> None:
        st = self.state
        state = paths.path(mark.path).state if paths is not None else None
        if state == PathState.UP:
            msg = f"{mark.path} path back: schedulable again"
        elif state == PathState.DOWN:
            msg = f"{mark.path} path lost by most hosts now, not by {host} alone: schedulable again"
        else:
            msg = f"{mark.path} path no longer judged ({state or 'host removed'}): mark removed"
        ops: list[Put | Delete] = [
            Delete(keys.DEGRADED + host),
            st.event(self.actor, f"host/{host}", "degraded-cleared", msg),
        ]
        if st.commit([*fence.compares, Compare(keys.DEGRADED + host, rev)], ops) is None:
            fence.check(st.store)

    def _evacuate(self, host: str, net: NetPath, since: float, fence: Fence) -> list[str]:
        st = self.state
        specs = st.view.models(VMSpec, keys.VMS)
        placements = st.view.models(Placement, keys.PLACEMENT)
        statuses = st.view.models(VMStatus, keys.VMSTATUS)
        migrating = st.view.models(Migration, keys.MIGRATIONS)
        due = []
        for vm, (p, _) in placements.items():
            if p.host != host or vm in migrating or vm not in specs:
                continue
            spec = specs[vm][0]
            status = statuses[vm][0] if vm in statuses else None
            if (
                spec.ha.mode == HAMode.RESTART
                and spec.power == Power.RUNNING
                and not spec.deleting
                and status is not None
                and status.host == host
                and status.state == VMState.RUNNING
            ):
                due.append(spec)
        asked = []
        reason = f"{net} path of {host} down since {_when(since)}"
        now = st.clock.monotonic()
        for spec in sorted(due, key=lambda s: (-s.ha.priority, s.name)):
            n, last = self.tries.get(spec.name, (0, 0.0))
            if n and now < last + retry_wait(n):
                self._say(
                    spec.name,
                    f"stays on {host} ({reason}): {n} move(s) failed; "
                    f"next try in {retry_wait(n):.0f} s",
                    fence,
                )
                continue
            self.tries[spec.name] = (n + 1, now)
            try:
                self.migrations.migrate(
                    spec.name, None, self.actor, fence=fence, reason=reason, ha=True
                )
            except ApiError as exc:
                self._say(spec.name, f"stays on {host} ({reason}): cannot move: {exc}", fence)
                continue
            self.said.pop(spec.name, None)
            asked.append(spec.name)
        return asked

    def _say(self, vm: str, why: str, fence: Fence) -> None:
        """An event on the VM, once for each new reason."""
        if self.said.get(vm) != why:
            self.said[vm] = why
            st = self.state
            st.commit([*fence.compares], [st.event(self.actor, f"vm/{vm}", "path-failover", why)])
