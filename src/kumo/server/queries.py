"""What the API shows: hosts, VMs, pools, networks, images, tasks and events, read from the
cluster's state. Nothing here writes."""

from __future__ import annotations

import bisect

from kumo.model.activity import Event, Task
from kumo.model.host import HostRecord, HostState, Image, Maintenance, Network, Pool
from kumo.model.vm import Placement, VMSpec, VMState, VMStatus
from kumo.server.errors import NotFound
from kumo.server.schemas import HostView, VMView, VMViewState
from kumo.server.state import ClusterState
from kumo.store import keys
from kumo.store.liveness import is_alive
from kumo.store.records import decode, load, load_all


def _vm_state(
    spec: VMSpec, placement: Placement | None, status: VMStatus | None, host_up: bool
) -> tuple[VMViewState, str]:
    """The state and message a VM shows. Its status is its host's word: once the host is
    down (no live agent lease) that word is stale, so the state is ``unknown`` until the host
    reports again (or HA moves the VM)."""
    if placement is not None and not host_up:
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
    spec: VMSpec, placement: Placement | None, status: VMStatus | None, host_up: bool
) -> VMView:
    """The VM as the API shows it."""
    state, message = _vm_state(spec, placement, status, host_up)
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
        views = []
        for name, (rec, _) in sorted(records.items()):
            on = [specs[v][0] for v, (p, _) in placements.items() if p.host == name and v in specs]
            views.append(
                HostView(
                    name=name,
                    state=HostState.UP if name in alive else HostState.DOWN,
                    schedulable=rec.schedulable and name not in maint,
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
            out.append(
                vm_view(
                    specs[name][0],
                    placement,
                    decode(VMStatus, st) if st else None,
                    placement is not None and placement.host in alive,
                )
            )
        return out

    def vm(self, name: str) -> VMView:
        store = self.state.store
        spec = self.state.spec(name)[0]
        p = load(store, Placement, keys.PLACEMENT + name)
        s = load(store, VMStatus, keys.VMSTATUS + name)
        up = p is not None and is_alive(store, p[0].host)
        return vm_view(spec, p[0] if p else None, s[0] if s else None, up)

    def pools(self) -> list[Pool]:
        return [p for p, _ in load_all(self.state.store, Pool, keys.POOLS).values()]

    def networks(self) -> list[Network]:
        return [n for n, _ in load_all(self.state.store, Network, keys.NETWORKS).values()]

    def images(self) -> list[Image]:
        return [i for i, _ in load_all(self.state.store, Image, keys.IMAGES).values()]

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
