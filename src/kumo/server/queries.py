"""What the API shows: hosts, VMs, pools, networks, images, tasks and events, read from the
cluster's state, and HA's view of it (``ha_status``, ``ha_plan``). Nothing here writes."""

from __future__ import annotations

import bisect
import dataclasses

from kumo.ha.recovery import Orphan, Restart, plan_recovery
from kumo.model.activity import Event, Task
from kumo.model.ha import FencedHost, HAMode, HASettings, HAStatus
from kumo.model.host import (
    Degraded,
    HostPaths,
    HostRecord,
    HostState,
    Image,
    Maintenance,
    Network,
    Pool,
)
from kumo.model.profile import InstallProfile
from kumo.model.vm import Migration, Placement, VMSpec, VMState, VMStatus
from kumo.scheduler.demand import demand, ha_demand
from kumo.scheduler.placement import Placed
from kumo.server.errors import Conflict, NotFound
from kumo.server.ha import wants_recovery
from kumo.server.schemas import (
    HAHostView,
    HAPlan,
    HAStatusView,
    HAVMView,
    HostView,
    PlannedRestart,
    PlannedWait,
    VMView,
    VMViewState,
)
from kumo.server.state import ClusterState
from kumo.store import keys
from kumo.store.liveness import is_alive
from kumo.store.records import decode, load, load_all


def _vm_state(
    spec: VMSpec,
    placement: Placement | None,
    status: VMStatus | None,
    host_up: bool,
    fenced: FencedHost | None = None,
    recovery: HAStatus | None = None,
) -> tuple[VMViewState, str]:
    """The state and message a VM shows. HA's word (``recovery``) comes first. Its status is
    its host's word: once the host is down (no live agent lease) that word is stale, so the
    state is ``unknown`` until the host reports again; once the host is also fenced (known
    off) the VM is not running: ``stopped``, or ``recovering`` if HA is to run it again."""
    if recovery is not None:
        return VMState(recovery.state.value), recovery.reason
    if placement is not None and not host_up:
        if fenced is not None:
            if wants_recovery(spec):
                return VMState.RECOVERING, (
                    f"host {placement.host} is fenced ({fenced.reason}); "
                    "HA is to run the VM on another host"
                )
            return VMState.STOPPED, f"host {placement.host} is fenced: the VM is not running"
        last = f"last reported {status.state.value}" if status else "never reported"
        if status and status.message:
            last += f" ({status.message})"
        return VMState.UNKNOWN, f"host {placement.host} is down (no live agent lease); {last}"
    if spec.deleting:
        return VMState.DELETING, status.message if status else ""
    if status is not None:
        return status.state, status.message
    return ("pending" if placement else "unplaced"), ""


def vm_view(
    spec: VMSpec,
    placement: Placement | None,
    status: VMStatus | None,
    host_up: bool,
    fenced: FencedHost | None = None,
    recovery: HAStatus | None = None,
) -> VMView:
    """The VM as the API shows it."""
    state, message = _vm_state(spec, placement, status, host_up, fenced, recovery)
    return VMView(
        name=spec.name,
        host=placement.host if placement else None,
        state=state,
        power=spec.power,
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        disk_gib=spec.disk_gib,
        image=spec.image,
        pool=spec.pool,
        networks=[n.network for n in spec.nics],
        message=message,
        task=spec.task,
        spec=spec,
        status=status,
    )


class Queries:
    def __init__(self, state: ClusterState) -> None:
        self.state = state

    def hosts(self) -> list[HostView]:
        view = self.state.view
        view.sync()
        records = view.models(HostRecord, keys.HOSTS)
        alive = self.state.alive()
        specs = view.models(VMSpec, keys.VMS)
        placements = view.models(Placement, keys.PLACEMENT)
        maint = view.models(Maintenance, keys.MAINTENANCE)
        fenced = view.models(FencedHost, keys.FENCED)
        degraded = view.models(Degraded, keys.DEGRADED)
        paths = view.models(HostPaths, keys.PATHS)
        views = []
        for name, (rec, _) in sorted(records.items()):
            on = [specs[v][0] for v, (p, _) in placements.items() if p.host == name and v in specs]
            views.append(
                HostView(
                    name=name,
                    state=_host_state(name in alive, name in fenced, name in degraded),
                    fenced=fenced[name][0] if name in fenced else None,
                    degraded=degraded[name][0] if name in degraded else None,
                    paths=paths[name][0] if name in paths and name in alive else None,
                    schedulable=rec.schedulable and name not in maint and name not in degraded,
                    maintenance=maint[name][0].state.value if name in maint else None,
                    maintenance_message=maint[name][0].message if name in maint else "",
                    address=rec.address,
                    cpus=rec.cpus,
                    memory_mib=rec.memory_mib,
                    vms=len(on),
                    vcpus_used=sum(s.vcpus for s in on),
                    memory_used_mib=sum(s.memory_mib for s in on),
                    record=rec,
                )
            )
        return views

    def host(self, name: str) -> HostView:
        for h in self.hosts():
            if h.name == name:
                return h
        raise NotFound(f"host {name} does not exist", "name")

    def vms(self, limit: int = 500, after: str = "") -> list[VMView]:
        """A page of VMs sorted by name: the first ``limit`` named after ``after``."""
        view = self.state.view
        view.sync()
        entries = view.range(keys.VMS)
        names = [e.key[len(keys.VMS) :] for e in entries]
        start = bisect.bisect_right(names, after) if after else 0
        page = entries[start : start + limit]
        specs = view.models(VMSpec, keys.VMS)
        alive = self.state.alive()
        out = []
        for e in page:
            name = e.key[len(keys.VMS) :]
            p = view.get(keys.PLACEMENT + name)
            placement = decode(Placement, p) if p else None
            st = view.get(keys.VMSTATUS + name)
            f = view.get(keys.FENCED + placement.host) if placement else None
            ha = view.get(keys.HA + name)
            out.append(
                vm_view(
                    specs[name][0],
                    placement,
                    decode(VMStatus, st) if st else None,
                    placement is not None and placement.host in alive,
                    decode(FencedHost, f) if f else None,
                    decode(HAStatus, ha) if ha else None,
                )
            )
        return out

    def vm(self, name: str) -> VMView:
        store = self.state.store
        spec = self.state.spec(name)[0]
        p = load(store, Placement, keys.PLACEMENT + name)
        s = load(store, VMStatus, keys.VMSTATUS + name)
        up = p is not None and is_alive(store, p[0].host)
        f = load(store, FencedHost, keys.FENCED + p[0].host) if p else None
        ha = load(store, HAStatus, keys.HA + name)
        return vm_view(
            spec,
            p[0] if p else None,
            s[0] if s else None,
            up,
            f[0] if f else None,
            ha[0] if ha else None,
        )

    def pools(self) -> list[Pool]:
        return [p for p, _ in load_all(self.state.store, Pool, keys.POOLS).values()]

    def networks(self) -> list[Network]:
        return [n for n, _ in load_all(self.state.store, Network, keys.NETWORKS).values()]

    def images(self) -> list[Image]:
        return [i for i, _ in load_all(self.state.store, Image, keys.IMAGES).values()]

    def profiles(self) -> list[InstallProfile]:
        found = load_all(self.state.store, InstallProfile, keys.PROFILES)
        return [p for p, _ in found.values()]

    def profile(self, name: str) -> InstallProfile:
        found = load(self.state.store, InstallProfile, keys.PROFILES + name)
        if found is None:
            raise NotFound(f"name: no profile named {name}", "name")
        return found[0]

    def tasks(self, limit: int = 100) -> list[Task]:
        tasks = [t for t, _ in load_all(self.state.store, Task, keys.TASKS).values()]
        return sorted(tasks, key=lambda t: t.created_at, reverse=True)[:limit]

    def task(self, task_id: str) -> Task:
        return self.state.task(task_id)

    def events(self, limit: int = 100, obj: str | None = None) -> list[Event]:
        evs = [decode(Event, e) for e in self.state.store.range(keys.EVENTS)]
        if obj:
            evs = [e for e in evs if e.object == obj]
        return evs[-limit:]

    # -- HA --------------------------------------------------------------------------------
    def ha_settings(self) -> HASettings:
        found = load(self.state.store, HASettings, keys.HA_SETTINGS)
        return found[0] if found else HASettings()

    def ha_status(self) -> HAStatusView:
        """Every host (lease, fence, VMs on it) and every HA VM (those HA would restart, and
        any it is recovering) with the state it shows."""
        view = self.state.view
        view.sync()
        alive = self.state.alive()
        fenced = {h: f for h, (f, _) in view.models(FencedHost, keys.FENCED).items()}
        specs = view.models(VMSpec, keys.VMS)
        placements = {v: p for v, (p, _) in view.models(Placement, keys.PLACEMENT).items()}
        statuses = {v: s for v, (s, _) in view.models(VMStatus, keys.VMSTATUS).items()}
        recovering = {v: r for v, (r, _) in view.models(HAStatus, keys.HA).items()}
        degraded = {e.key[len(keys.DEGRADED) :] for e in view.range(keys.DEGRADED)}
        hosts = [
            HAHostView(
                name=name,
                state=_host_state(name in alive, name in fenced, name in degraded),
                lease=name in alive,
                fenced=fenced.get(name),
                vms=sorted(v for v, p in placements.items() if p.host == name and v in specs),
            )
            for name in sorted(view.models(HostRecord, keys.HOSTS))
        ]
        vms = []
        for name, (spec, _) in sorted(specs.items()):
            if spec.ha.mode != HAMode.RESTART and name not in recovering:
                continue
            p = placements.get(name)
            state, message = _vm_state(
                spec,
                p,
                statuses.get(name),
                p is not None and p.host in alive,
                fenced.get(p.host) if p else None,
                recovering.get(name),
            )
            vms.append(
                HAVMView(
                    name=name,
                    mode=spec.ha.mode,
                    priority=spec.ha.priority,
                    host=p.host if p else None,
                    state=state,
                    message=message,
                    recovery=recovering.get(name),
                )
            )
        return HAStatusView(hosts=hosts, vms=vms)

    def ha_plan(self, fail: list[str] | None = None) -> HAPlan:
        """Where the HA VMs of the ``fail`` hosts (default: every host down or fenced now;
        a VM being migrated is left to its migration, as HA leaves it) would run if those
        hosts died now, by the recovery planner HA runs
        (:func:`kumo.ha.recovery.plan_recovery`) on the cluster as it is. Reads only."""
        view = self.state.view
        view.sync()
        hosts = self.state.sched_hosts()
        names = {h.name for h in hosts}
        for h in fail or []:
            if h not in names:
                known = ", ".join(sorted(names)) or "none"
                raise Conflict(f"fail: no host named {h} (known: {known})", "fail")
        failed = set(fail) if fail is not None else {h.name for h in hosts if not h.up}
        hosts = [dataclasses.replace(h, up=False) if h.name in failed else h for h in hosts]
        specs = {v: s for v, (s, _) in view.models(VMSpec, keys.VMS).items()}
        migrations = view.models(Migration, keys.MIGRATIONS)  # HA leaves these to them
        placed: list[Placed] = []
        orphans: list[Orphan] = []
        left: list[str] = []
        for v, (p, _) in sorted(view.models(Placement, keys.PLACEMENT).items()):
            spec = specs.get(v)
            if spec is None:
                continue
            if p.host not in failed:
                placed.append(Placed(demand(spec), p.host))
            elif wants_recovery(spec) and v not in migrations:
                orphans.append(Orphan(ha_demand(spec), spec.ha.priority, p.host))
            else:
                left.append(v)
        for v, (m, _) in migrations.items():
            if v in specs and m.target not in failed:
                placed.append(Placed(demand(specs[v]), m.target))
        restart, waits = [], []
        for d in plan_recovery(orphans, hosts, placed, self.state.policy):
            if isinstance(d, Restart):
                restart.append(
                    PlannedRestart(vm=d.vm, priority=d.priority, was_on=d.was_on, to=d.host)
                )
            else:
                waits.append(
                    PlannedWait(vm=d.vm, priority=d.priority, was_on=d.was_on, reason=d.reason)
                )
        return HAPlan(failed=sorted(failed), restart=restart, waits=waits, not_recovered=left)


def _host_state(alive: bool, fenced: bool, degraded: bool = False) -> HostState:
    """Up while its agent holds a lease (a fenced host whose agent came back is up: the
    leader unfences it), degraded when the leader found one of its network paths down;
    else fenced when known off, else down."""
    if alive:
        return HostState.DEGRADED if degraded else HostState.UP
    return HostState.FENCED if fenced else HostState.DOWN
