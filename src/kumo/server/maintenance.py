"""Host maintenance behind the API and the leader's drain pass: entering makes a host
unschedulable and has its running VMs migrated away (through ``Migrations``, so the queue
keeps within the limits); exiting makes it schedulable again and can move them back."""

from __future__ import annotations

from kumo.model.activity import Task, TaskState
from kumo.model.host import Maintenance, MaintenanceState
from kumo.model.vm import Migration, Placement, VMState, VMStatus
from kumo.server.errors import Conflict, Invalid, NotFound
from kumo.server.migrations import Migrations
from kumo.server.state import ClusterState
from kumo.store import keys
from kumo.store.activity import finish_task
from kumo.store.base import Compare, Delete, Put
from kumo.store.lease import NO_FENCE, Fence
from kumo.store.records import load, put


class Maintainer:
    def __init__(self, state: ClusterState, migrations: Migrations) -> None:
        self.state = state
        self.migrations = migrations

    def maintenance(self, host: str, action: str, failback: bool, actor: str) -> list[Task]:
        """Enter: make ``host`` unschedulable and have the leader move its running VMs away.
        Exit: make it schedulable again and (``failback``) move back the VMs that left."""
        st = self.state
        st.view.sync()
        if st.view.get(keys.HOSTS + host) is None:
            raise NotFound(f"host {host} does not exist", "name")
        found = load(st.store, Maintenance, keys.MAINTENANCE + host)
        if action == "enter":
            if found is not None:
                raise Conflict(f"host {host} is already in {found[0].state}")
            task = st.new_task("host.maintenance", f"host/{host}", actor)
            m = Maintenance(host=host, task=task.id, since=st.clock.now())
            ok = st.commit(
                [Compare(keys.MAINTENANCE + host, 0)],
                [
                    put(keys.MAINTENANCE + host, m),
                    put(keys.TASKS + task.id, task),
                    self.state.event(
                        actor, f"host/{host}", "maintenance", "enter: unschedulable, draining"
                    ),
                ],
            )
            if ok is None:
                raise Conflict(f"host {host} changed meanwhile; try again")
            return [task]
        if found is None:
            raise Conflict(f"host {host} is not in maintenance")
        m, rev = found
        ops: list[Put | Delete] = [
            Delete(keys.MAINTENANCE + host),
            self.state.event(actor, f"host/{host}", "maintenance", "exit: schedulable"),
        ]
        ops += st.cancel_ops(m.task, "maintenance exited before the host was empty")
        if st.commit([Compare(keys.MAINTENANCE + host, rev)], ops) is None:
            raise Conflict(f"host {host} changed meanwhile; try again")
        tasks = []
        if failback:
            placements = st.view.models(Placement, keys.PLACEMENT)
            for vm in m.evacuated:
                if vm in placements and placements[vm][0].host != host:
                    try:
                        tasks.append(self.migrations.migrate(vm, host, actor))
                    except (Conflict, Invalid, NotFound) as exc:
                        st.store.commit(
                            [], [self.state.event(actor, f"vm/{vm}", "failback", f"stays: {exc}")]
                        )
        return tasks

    def drain(self, actor: str, fence: Fence = NO_FENCE) -> None:
        """One pass of the maintenance controller: for each draining host, ask to migrate
        its running VMs (the queue keeps within the limits), record what cannot move, and
        declare the host in maintenance once no running VM is left on it. Every write
        carries the leader's ``fence``."""
        st = self.state
        st.view.sync()
        maint = st.view.models(Maintenance, keys.MAINTENANCE)
        if not maint:
            return
        placements = st.view.models(Placement, keys.PLACEMENT)
        migrations = st.view.models(Migration, keys.MIGRATIONS)
        statuses = st.view.models(VMStatus, keys.VMSTATUS)
        for host, (m, rev) in sorted(maint.items()):
            if m.state != MaintenanceState.DRAINING:
                continue
            here = sorted(v for v, (p, _) in placements.items() if p.host == host)
            running = [v for v in here if v in statuses and statuses[v][0].state == VMState.RUNNING]
            evacuated, problems = list(m.evacuated), []
            for vm in running:
                if vm in migrations:
                    continue
                try:
                    self.migrations.migrate(vm, None, actor, fence=fence)
                    if vm not in evacuated:
                        evacuated.append(vm)
                except (Conflict, Invalid) as exc:
                    problems.append(f"{vm}: {exc}")
            moving = [v for v in running if v in migrations]
            # Only a stopped VM may stay: a paused or crashed one, or one whose state is not
            # known yet, keeps the host draining until someone looks at it.
            stopped = [v for v in here if v in statuses and statuses[v][0].state == VMState.STOPPED]
            stuck = [v for v in here if v not in running and v not in stopped]
            problems += [
                f"{v}: {statuses[v][0].state if v in statuses else 'state unknown'}, "
                "cannot be live-migrated"
                for v in stuck
            ]
            if not running and not moving and not stuck:
                state, message = (
                    MaintenanceState.MAINTENANCE,
                    (
                        f"empty of running VMs; stopped VMs stay: {', '.join(stopped)}"
                        if stopped
                        else "empty"
                    ),
                )
            else:
                state = MaintenanceState.DRAINING
                message = "; ".join(problems) or f"moving {len(running)} running VM(s)"
            changed = m.model_copy(
                update={"state": state, "message": message, "evacuated": tuple(evacuated)}
            )
            if changed == m:
                continue
            ops: list[Put | Delete] = [put(keys.MAINTENANCE + host, changed)]
            if state != m.state or message != m.message:
                ops.append(self.state.event(actor, f"host/{host}", state.value, message))
            ok = st.commit([*fence.compares, Compare(keys.MAINTENANCE + host, rev)], ops)
            if ok is None:
                fence.check(st.store)
            if ok is not None and state == MaintenanceState.MAINTENANCE:
                finish_task(
                    st.store,
                    m.task,
                    TaskState.SUCCEEDED,
                    f"host {host}: {message}",
                    fence=fence.compares,
                    clock=st.clock,
                )
            elif problems:
                finish_task(
                    st.store,
                    m.task,
                    TaskState.RUNNING,
                    message,
                    fence=fence.compares,
                    clock=st.clock,
                )
