"""Migrations behind the API: `vm migrate` (live or cold), the migration policy, the queue
that keeps within the cluster's concurrency limits, and `task cancel`. The source host's
agent carries a migration out."""

from __future__ import annotations

import dataclasses

from kumo.model.activity import Task, TaskState
from kumo.model.host import Pool
from kumo.model.migration import (
    MigrationOverride,
    MigrationPolicy,
    MigrationSettings,
    effective,
)
from kumo.model.vm import (
    Migration,
    MigrationState,
    Placement,
    Power,
    VMSpec,
    VMState,
    VMStatus,
)
from kumo.scheduler.demand import demand, ha_demand
from kumo.scheduler.placement import Chosen, place, usage_of
from kumo.server.errors import Conflict, Invalid
from kumo.server.placement import Placer
from kumo.server.state import ClusterState
from kumo.store import keys
from kumo.store.activity import finish_task
from kumo.store.base import Compare, Delete, Put
from kumo.store.lease import NO_FENCE, Fence
from kumo.store.records import decode, load, put


def _slots(
    running: list[Migration], settings: MigrationSettings, source: str, target: str
) -> str | None:
    """Why a migration from ``source`` to ``target`` must wait, or None when it may run."""
    if len(running) >= settings.max_total:
        return f"{len(running)} migrations running in the cluster (limit {settings.max_total})"
    for host in (source, target):
        n = sum(1 for m in running if host in (m.source, m.target))
        if n >= settings.max_per_host:
            return f"{n} migrations running on {host} (limit {settings.max_per_host})"
    return None


def _alone(policy: MigrationPolicy | MigrationOverride, prefix: str = "") -> None:
    """422 (Invalid) when the request on its own starts the downtime target above the
    ceiling it may rise to: wrong whatever the cluster holds. Checked before anything is
    merged, so the answer does not depend on the stored policies."""
    downtime, ceiling = policy.downtime_ms, policy.max_downtime_ms
    if downtime is not None and ceiling is not None and ceiling < downtime:
        raise Invalid(
            f"{prefix}max_downtime_ms: {ceiling} is below downtime_ms {downtime}; "
            "the target only rises",
            f"{prefix}max_downtime_ms",
        )


def _over(
    beneath: MigrationPolicy, override: MigrationOverride | None, what: str, prefix: str = ""
) -> MigrationPolicy:
    """The policy ``override`` (fine alone: see ``_alone``) makes of ``beneath``, the stored
    policies called ``what``; 409 (Conflict) when the two break the downtime rule together,
    since the same request may pass once those change. The error names the downtime field
    the request sets; when it sets neither, the fault is in the stored policies alone, and
    the error names no field (so the API names the VM of the path)."""
    policy = effective(beneath, override)
    downtime, ceiling = policy.downtime_ms, policy.max_downtime_ms
    if ceiling >= downtime:
        return policy
    sets = override or MigrationOverride()
    if sets.downtime_ms is not None:
        field, why = "downtime_ms", f"{downtime} is above max_downtime_ms {ceiling}"
    elif sets.max_downtime_ms is not None:
        field, why = "max_downtime_ms", f"{ceiling} is below downtime_ms {downtime}"
    else:
        raise Conflict(
            f"{what}: max_downtime_ms {ceiling} is below downtime_ms {downtime}; "
            "the target only rises: change one of them"
        )
    raise Conflict(f"{prefix}{field}: {why} of {what}; the target only rises", f"{prefix}{field}")


class Migrations:
    def __init__(self, state: ClusterState, placer: Placer) -> None:
        self.state = state
        self.placer = placer

    # -- policy ---------------------------------------------------------------------------
    def settings(self) -> MigrationSettings:
        found = load(self.state.store, MigrationSettings, keys.MIGRATION_SETTINGS)
        return found[0] if found else MigrationSettings()

    def set_settings(self, new: MigrationSettings, actor: str) -> MigrationSettings:
        _alone(new.policy, "policy.")
        found = self.state.store.get(keys.MIGRATION_SETTINGS)
        ok = self.state.commit(
            [Compare(keys.MIGRATION_SETTINGS, found.mod_revision if found else 0)],
            [
                put(keys.MIGRATION_SETTINGS, new),
                self.state.event(actor, "cluster/migration", "policy", new.model_dump_json()),
            ],
        )
        if ok is None:
            raise Conflict("the migration settings changed meanwhile; try again")
        return new

    def set_vm_policy(self, name: str, override: MigrationOverride, actor: str) -> VMSpec:
        _alone(override)
        spec, rev = self.state.spec(name)
        _over(self.settings().policy, override, "the cluster's policy")  # replaces the old one
        empty = override == MigrationOverride()
        updated = spec.model_copy(update={"migration": None if empty else override})
        ok = self.state.commit(
            [Compare(keys.VMS + name, rev)],
            [
                put(keys.VMS + name, updated),
                self.state.event(
                    actor,
                    f"vm/{name}",
                    "migration-policy",
                    override.model_dump_json(exclude_none=True),
                ),
            ],
        )
        if ok is None:
            raise Conflict(f"vm {name} changed meanwhile; try again")
        return updated

    # -- migrate --------------------------------------------------------------------------
    def migrate(
        self,
        name: str,
        to: str | None,
        actor: str,
        cold: bool = False,
        override: MigrationOverride | None = None,
        fence: Fence = NO_FENCE,
        reason: str = "",
        ha: bool = False,
    ) -> Task:
        """Ask the VM's host to move it to ``to`` (or the scheduler's choice): live, or
        ``cold`` for a stopped VM. Runs at once, or queues while the limits are reached.
        ``fence``: the leader's, when its maintenance controller asks; ``reason``: why,
        when kumo asks itself (kept in the task and the event); ``ha``: HA moves it (the
        network-path failover), so its HA hosts and preferred host decide, not its pin."""
        if override is not None:
            _alone(override, "policy.")
        st, view = self.state, self.state.view
        view.sync()
        spec, rev = st.spec(name)
        if spec.deleting:
            raise Conflict(f"vm {name} is being deleted")
        pentry = view.get(keys.PLACEMENT + name)
        if pentry is None:
            raise Conflict(f"vm {name} is not placed on a host yet")
        source = decode(Placement, pentry).host
        if to is not None and to == source:
            raise Conflict(f"to: vm {name} already runs on {to}", "to")
        if to is not None and view.get(keys.HOSTS + to) is None:
            raise Conflict(f"to: no host named {to}", "to")
        sentry = view.get(keys.VMSTATUS + name)
        state = decode(VMStatus, sentry).state if sentry else None
        if cold:
            if spec.power != Power.STOPPED or state != VMState.STOPPED:
                raise Conflict(
                    f"vm {name} is {state or 'not stopped'}; cold migration moves a stopped VM "
                    "(stop it first, or migrate it live)"
                )
        elif spec.power != Power.RUNNING or state != VMState.RUNNING:
            raise Conflict(
                f"vm {name} is {state or 'not running'}; live migration moves a running VM "
                "(use --cold for a stopped one)"
            )
        current = view.get(keys.MIGRATIONS + name)
        if current is not None:
            task_id = decode(Migration, current).task
            raise Conflict(f"vm {name} is already migrating (task {task_id})")
        pentry_pool = view.get(keys.POOLS + spec.pool)
        local = pentry_pool is None or decode(Pool, pentry_pool).kind != "shared-dir"
        if local and cold:
            raise Conflict(
                f"vm {name}: its disk is in pool {spec.pool}, which is host-local; cold "
                "migration moves VMs whose disks are on a shared pool (start it and migrate "
                "it live: the disk is copied)"
            )
        if spec.placement.host is not None and to is None and not ha:
            raise Conflict(f"vm {name} is pinned to host {spec.placement.host}; give --to")
        hosts = [h for h in st.sched_hosts() if h.name != source]
        d = dataclasses.replace(ha_demand(spec) if ha else demand(spec), pin=to)
        result = place(d, hosts, usage_of(self.placer.placed(), exclude=name), st.policy)
        if not isinstance(result, Chosen):
            raise Conflict(str(result), "to")
        settings = self.settings()
        beneath = effective(settings.policy, spec.migration)
        policy = _over(beneath, override, "the cluster's and the VM's policy", "policy.")
        task = st.new_task("vm.migrate", f"vm/{name}", actor)
        if reason:
            task = task.model_copy(update={"reason": reason})
        running = [m for m, _ in view.models(Migration, keys.MIGRATIONS).values()]
        wait = _slots(
            [m for m in running if m.state == MigrationState.RUNNING], settings, source, result.host
        )
        m = Migration(
            vm=name,
            task=task.id,
            source=source,
            target=result.host,
            mode="cold" if cold else "live",
            copy_storage=local,
            state=MigrationState.QUEUED if wait else MigrationState.RUNNING,
            policy=policy,
            started_at=st.clock.now(),
        )
        if wait:
            task = task.model_copy(update={"message": f"queued: {wait}"})
        ok = st.commit(
            [
                *fence.compares,
                Compare(keys.MIGRATIONS + name, 0),
                Compare(keys.VMS + name, rev),
                Compare(keys.PLACEMENT + name, pentry.mod_revision),
            ],
            [
                put(keys.MIGRATIONS + name, m),
                put(keys.TASKS + task.id, task),
                self.state.event(
                    actor,
                    f"vm/{name}",
                    "migrate",
                    f"{m.mode} {source} -> {result.host} ({task.id})"
                    + (", copying the disk" if local else "")
                    + (f", queued: {wait}" if wait else "")
                    + (f": {reason}" if reason else ""),
                ),
            ],
        )
        if ok is None:
            fence.check(st.store)
            raise Conflict(f"vm {name} changed meanwhile; try again")
        return task

    def start_queued(self, actor: str, fence: Fence = NO_FENCE) -> list[str]:
        """The leader's pass over the queue: start queued migrations, oldest first, as the
        limits allow. Returns the VMs whose migration started."""
        view = self.state.view
        view.sync()
        found = view.models(Migration, keys.MIGRATIONS)
        queued = sorted(
            (m.started_at, v) for v, (m, _) in found.items() if m.state == MigrationState.QUEUED
        )
        if not queued:
            return []
        settings = self.settings()
        running = [m for m, _ in found.values() if m.state == MigrationState.RUNNING]
        started = []
        for _, vm in queued:
            m, rev = found[vm]
            if _slots(running, settings, m.source, m.target) is not None:
                continue
            go = m.model_copy(update={"state": MigrationState.RUNNING})
            ok = self.state.commit(
                [*fence.compares, Compare(keys.MIGRATIONS + vm, rev)],
                [
                    put(keys.MIGRATIONS + vm, go),
                    self.state.event(actor, f"vm/{vm}", "migrate", f"dequeued ({m.task})"),
                ],
            )
            if ok is None:
                fence.check(self.state.store)
            else:
                running.append(go)
                started.append(vm)
                finish_task(
                    self.state.store,
                    m.task,
                    TaskState.RUNNING,
                    "starting",
                    fence=fence.compares,
                    clock=self.state.clock,
                )
        return started

    def cancel_task(self, task_id: str, actor: str) -> Task:
        st = self.state
        task = st.task(task_id)
        if task.state.done:
            raise Conflict(f"task {task_id} is already {task.state}")
        if task.kind != "vm.migrate":
            raise Conflict(f"task {task_id} ({task.kind}) cannot be cancelled; only migrations can")
        vm = task.target.removeprefix("vm/")
        found = load(st.store, Migration, keys.MIGRATIONS + vm)
        if found is None or found[0].task != task_id:
            raise Conflict(f"task {task_id} is finishing; it can no longer be cancelled")
        m, mrev = found
        if m.state == MigrationState.QUEUED:
            # Nobody works on it yet: cancelling is removing it.
            ops: list[Put | Delete] = [Delete(keys.MIGRATIONS + vm)]
            ops += st.cancel_ops(task_id, f"cancelled while queued; {vm} stays on {m.source}")
        else:
            ops = [put(keys.MIGRATIONS + vm, m.model_copy(update={"cancel": True}))]
        ops.append(self.state.event(actor, f"vm/{vm}", "cancel", f"migration {task_id}"))
        if st.commit([Compare(keys.MIGRATIONS + vm, mrev)], ops) is None:
            raise Conflict(f"task {task_id} changed meanwhile; try again")
        return st.task(task_id)
