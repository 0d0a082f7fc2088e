"""Cluster operations behind the API: each checks its arguments, then the cluster's state,
then writes everything it changes in one compare-and-swap commit (nothing half-applied).

Placement is decided by the pure scheduler and committed together with the VM, guarded by
``sched-epoch``: two placements racing on any API replica cannot both use the same free
capacity; the loser retries on fresh state.
"""

from __future__ import annotations

import bisect
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kumo.clock import SYSTEM_IDS, Ids
from kumo.model.activity import Event, Task, TaskState
from kumo.model.cpu import ClusterCPU
from kumo.model.host import (
    HostRecord,
    HostState,
    Image,
    Maintenance,
    Network,
    Pool,
)
from kumo.model.vm import (
    Migration,
    Nic,
    Placement,
    PlacementRules,
    Power,
    VMSpec,
    VMState,
    VMStatus,
)
from kumo.scheduler.cpu import default_baseline, vm_cpu
from kumo.scheduler.demand import demand
from kumo.scheduler.placement import Chosen, HostUsage, Placed, Policy, place, usage_of
from kumo.scheduler.placement import HostView as SchedHost
from kumo.server.errors import Conflict, Invalid, NotFound
from kumo.server.macs import NoFreeMac, draw_macs
from kumo.server.migrations import Migrations
from kumo.server.schemas import (
    HostView,
    ImageImport,
    NetworkCreate,
    PoolCreate,
    VMCreate,
    VMView,
    VMViewState,
)
from kumo.store import keys
from kumo.store.activity import event_op, new_task
from kumo.store.base import ClusterStore, Compare, Delete, Put
from kumo.store.cache import DirectView, StoreCache
from kumo.store.lease import NO_FENCE, Fence
from kumo.store.records import decode, load, load_all, put

PLACEMENT_RETRIES = 20
# etcd's default --max-txn-ops: a transaction holds at most this many compares, and as many
# writes. A group commit takes requests while their operations fit (25 one-NIC VMs).
MAX_TXN_OPS = 128
_USAGE_PREFIXES = (keys.VMS, keys.PLACEMENT, keys.MIGRATIONS)


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


@dataclass
class _PlaceRequest:
    spec: VMSpec
    compares: list[Compare]
    ops: list[Put]
    actor: str
    on_lost: Callable[[], None]
    new: bool = False  # a new VM: its spec and its MAC keys are written with its placement
    host: str | None = None
    error: Exception | None = None
    done: bool = False


def _txn_ops(r: _PlaceRequest) -> int:
    """The compares or writes ``r`` adds to a group commit, whichever are more: its own,
    the placement (and its event); for a new VM, its spec and a key a MAC."""
    nics = len(r.spec.nics) if r.new else 0
    return max(len(r.compares) + 1 + nics, len(r.ops) + 2 + (1 + nics if r.new else 0))


def _take_batch(queue: list[_PlaceRequest]) -> tuple[list[_PlaceRequest], list[_PlaceRequest]]:
    """The first requests of ``queue`` whose operations fit one transaction (at least one),
    and the rest."""
    room, n = MAX_TXN_OPS - 1, 0  # 1: the sched-epoch compare and write
    while n < len(queue) and (n == 0 or _txn_ops(queue[n]) <= room):
        room -= _txn_ops(queue[n])
        n += 1
    return queue[:n], queue[n:]


class ClusterService:
    def __init__(
        self,
        store: ClusterStore,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
        view: StoreCache | DirectView | None = None,
        mac_bits: Callable[[], int] = lambda: secrets.randbits(24),
        ids: Ids = SYSTEM_IDS,
    ) -> None:
        self.store = store
        self.policy = policy or Policy()
        self.clock = clock
        self.ids = ids  # task ids and event keys
        self.mac_bits = mac_bits  # random bits for MAC addresses
        # Lists and placement read this (a watch-fed cache in `kumo server`).
        self.view = view or DirectView(store)
        # Placed VMs as the scheduler sees them, per (spec, placement) revision.
        self._placed_memo: dict[str, tuple[tuple[int, int], Placed]] = {}
        self._placing = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_PlaceRequest] = []
        self._usage: tuple[tuple[int, ...], dict[str, HostUsage]] | None = None
        self.migrations = Migrations(self)

    def _cancel_ops(self, task_id: str | None, message: str) -> list[Put | Delete]:
        """The write that cancels ``task_id`` with ``message``, if it is still open."""
        prev = load(self.store, Task, keys.TASKS + task_id) if task_id else None
        if prev is None or prev[0].state.done:
            return []
        cancelled = prev[0].model_copy(
            update={"state": TaskState.CANCELLED, "message": message, "updated_at": self.clock()}
        )
        return [put(keys.TASKS + prev[0].id, cancelled)]

    def _commit(self, compares: list[Compare], ops: Sequence[Put | Delete]) -> int | None:
        """Commit, and show the write in this replica's cache at once (read-your-writes)."""
        rev = self.store.commit(compares, ops)
        if rev is not None:
            self.view.applied(ops, rev)
        return rev

    def _fresh(self, found: bool) -> bool:
        """Whether a lookup that failed in the cache would fail on etcd's current state too:
        another replica may have just created what we look for."""
        if not found:
            self.view.sync()
        return found

    # -- reads -------------------------------------------------------------------------
    def hosts(self) -> list[HostView]:
        self.view.sync()
        records = self.view.models(HostRecord, keys.HOSTS)
        alive = {e.key[len(keys.ALIVE) :] for e in self.view.range(keys.ALIVE)}
        specs = self.view.models(VMSpec, keys.VMS)
        placements = self.view.models(Placement, keys.PLACEMENT)
        maint = self.view.models(Maintenance, keys.MAINTENANCE)
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

    def _view(
        self,
        spec: VMSpec,
        placement: Placement | None,
        status: VMStatus | None,
        host_up: bool,
    ) -> VMView:
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

    def vms(self, limit: int = 500, after: str = "") -> list[VMView]:
        """A page of VMs sorted by name: the first ``limit`` named after ``after``."""
        self.view.sync()
        entries = self.view.range(keys.VMS)
        names = [e.key[len(keys.VMS) :] for e in entries]
        start = bisect.bisect_right(names, after) if after else 0
        page = entries[start : start + limit]
        specs = self.view.models(VMSpec, keys.VMS)
        alive = {e.key[len(keys.ALIVE) :] for e in self.view.range(keys.ALIVE)}
        out = []
        for e in page:
            name = e.key[len(keys.VMS) :]
            p = self.view.get(keys.PLACEMENT + name)
            placement = decode(Placement, p) if p else None
            st = self.view.get(keys.VMSTATUS + name)
            out.append(
                self._view(
                    specs[name][0],
                    placement,
                    decode(VMStatus, st) if st else None,
                    placement is not None and placement.host in alive,
                )
            )
        return out

    def vm(self, name: str) -> VMView:
        spec = self._spec(name)[0]
        p = load(self.store, Placement, keys.PLACEMENT + name)
        s = load(self.store, VMStatus, keys.VMSTATUS + name)
        up = p is not None and self.store.get(keys.ALIVE + p[0].host) is not None
        return self._view(spec, p[0] if p else None, s[0] if s else None, up)

    def _spec(self, name: str) -> tuple[VMSpec, int]:
        found = load(self.store, VMSpec, keys.VMS + name)
        if found is None:
            raise NotFound(f"vm {name} does not exist", "name")
        return found

    # -- VM commands ---------------------------------------------------------------------
    def create_vm(self, req: VMCreate, actor: str) -> tuple[VMView, Task]:
        # Checks read the cache, which holds every write of this replica (write-through);
        # the commit's compares catch what another replica changed meanwhile (then we sync
        # and decide again).
        images = self.view.models(Image, keys.IMAGES)
        if not self._fresh(req.image in images):
            images = self.view.models(Image, keys.IMAGES)
        if req.image not in images:
            known = ", ".join(sorted(images)) or "none"
            raise Conflict(f"image: no image named {req.image} (known: {known})", "image")
        image = images[req.image]
        pool = req.pool or image[0].pool
        self._fresh(self.view.get(keys.POOLS + pool) is not None)
        if self.view.get(keys.POOLS + pool) is None:
            raise Conflict(f"pool: no pool named {pool}", "pool")
        if pool != image[0].pool:
            raise Conflict(
                f"pool: image {req.image} is in pool {image[0].pool}; a VM's disk is "
                f"made in the image's pool",
                "pool",
            )
        nets = self.view.models(Network, keys.NETWORKS)
        if not self._fresh(all(n in nets for n in req.networks)):
            nets = self.view.models(Network, keys.NETWORKS)
        for n in req.networks:
            if n not in nets:
                raise Conflict(
                    f"networks: no network named {n} (known: {', '.join(sorted(nets)) or 'none'})",
                    "networks",
                )
        disk = req.disk_gib or image[0].size_gib
        if disk < image[0].size_gib:
            raise Conflict(
                f"disk_gib: {disk} is smaller than image {req.image} ({image[0].size_gib} GiB)",
                "disk_gib",
            )
        if req.host is not None:
            self._fresh(self.view.get(keys.HOSTS + req.host) is not None)
            if self.view.get(keys.HOSTS + req.host) is None:
                raise Conflict(f"host: no host named {req.host}", "host")
        vm_uuid = str(uuid.uuid4())
        task = new_task("vm.create", f"vm/{req.name}", actor, self.clock(), ids=self.ids)
        macs = draw_macs(len(req.networks), lambda _: False, self.mac_bits)  # checked when placed
        spec = VMSpec(
            name=req.name,
            uuid=vm_uuid,
            vcpus=req.vcpus,
            memory_mib=req.memory_mib,
            disk_gib=disk,
            image=req.image,
            pool=pool,
            clone=req.clone,
            nics=tuple(Nic(network=n, mac=m) for n, m in zip(req.networks, macs, strict=True)),
            boot=tuple(req.boot),
            ssh_keys=tuple(req.ssh_keys),
            cpu_model=req.cpu_model,
            cpu=vm_cpu(req.cpu_model, self._cluster_cpu(req.host)),
            runcmd=tuple(req.runcmd),
            placement=PlacementRules(
                host=req.host, affinity=req.affinity, anti_affinity=req.anti_affinity
            ),
            power=Power.RUNNING if req.start else Power.STOPPED,
            stop_timeout_s=req.stop_timeout_s,
            task=task.id,
            created_at=self.clock(),
        )
        host, spec = self._place_and_commit(
            spec,
            [Compare(keys.VMS + spec.name, 0)],
            [put(keys.TASKS + task.id, task)],
            actor,
            on_lost=lambda: self._exists(spec.name),
            new=True,
        )
        # The scheduler chose a live host.
        return self._view(spec, Placement(host=host, at=self.clock()), None, True), task

    def _cluster_cpu(self, host: str | None) -> ClusterCPU | None:
        """The default guest CPU the agents computed (ADR 0007) for the domain type of
        ``host``, or of most hosts; None if none."""
        baselines = {t: c for t, (c, _) in self.view.models(ClusterCPU, keys.CLUSTER_CPU).items()}
        hosts = {n: r for n, (r, _) in self.view.models(HostRecord, keys.HOSTS).items()}
        return default_baseline(baselines, hosts, host)

    def _exists(self, name: str) -> None:
        if self.view.get(keys.VMS + name) is not None:
            raise Conflict(f"name: vm {name} already exists", "name")

    def _place_and_commit(
        self,
        spec: VMSpec,
        compares: list[Compare],
        ops: list[Put],
        actor: str,
        on_lost: Callable[[], None],
        new: bool = False,
    ) -> tuple[str, VMSpec]:
        """Place ``spec`` and commit it with ``compares`` and ``ops``: the host and the spec
        as committed (a new VM's MACs may have been drawn again)."""
        # One placer at a time per replica (concurrent ones would only lose the sched-epoch
        # race to each other). Requests that arrive while it waits on etcd queue up, and the
        # next placer decides them all and commits them in one transaction (group commit).
        req = _PlaceRequest(spec, compares, ops, actor, on_lost, new)
        with self._queue_lock:
            self._queue.append(req)
        while not req.done:
            with self._placing:
                with self._queue_lock:
                    batch, self._queue = _take_batch(self._queue)
                if batch:
                    self._place_batch(batch)
        if req.error is not None:
            raise req.error
        assert req.host is not None
        return req.host, req.spec

    def _place_batch(self, batch: list[_PlaceRequest]) -> None:
        """Decide and commit ``batch``, in rounds: what a round leaves (a lost race, a
        refusal on possibly stale state, a name twice in the batch) is decided again on
        state synced with etcd, where a refusal is final."""
        pending, fresh = batch, False
        for _ in range(PLACEMENT_RETRIES):
            try:
                if fresh and len(pending) > 1:
                    # A group that lost on fresh state may hold one request whose own
                    # compare can never hold: go one by one so it cannot fail the others.
                    pending = [x for r in pending for x in self._place_group([r], final=True)]
                else:
                    pending = self._place_group(pending, final=fresh)
            except Exception as exc:  # etcd down, …: every caller sees it
                for r in pending:
                    r.error, r.done = exc, True
                return
            if not pending:
                return
            self.view.sync()
            fresh = True
        for r in pending:
            r.error = Conflict("placement: too many concurrent placements; try again", "placement")
            r.done = True

    def _place_group(self, batch: list[_PlaceRequest], final: bool) -> list[_PlaceRequest]:
        """One round: decide every request against the running usage and commit all those
        placed in one transaction. Returns the requests left for another round."""
        left: list[_PlaceRequest] = []
        names: set[str] = set()
        epoch = self.view.get(keys.SCHED_EPOCH)
        epoch_rev = epoch.mod_revision if epoch else 0
        n = int(epoch.value or b"0") + 1 if epoch else 1
        base = self._cluster_usage()
        usage = dict(base)
        hosts = self._sched_hosts()
        chosen: list[tuple[_PlaceRequest, str]] = []
        compares = [Compare(keys.SCHED_EPOCH, epoch_rev)]
        writes: list[Put | Delete] = []
        macs: set[str] = set()  # claimed by this group
        for r in batch:
            if r.spec.name in names:
                left.append(r)
                continue
            try:
                r.on_lost()
            except Conflict as exc:
                r.error, r.done = exc, True
                continue
            d = demand(r.spec)
            result = place(d, hosts, usage, self.policy)
            if not isinstance(result, Chosen):
                if final:
                    r.error, r.done = Conflict(str(result), "placement"), True
                else:
                    left.append(r)  # refuse only on etcd's current state
                continue
            if r.new:
                try:
                    compares += self._claim_macs(r, macs, writes)
                except NoFreeMac as exc:
                    r.error, r.done = Conflict(f"networks: {exc}", "networks"), True
                    continue
            names.add(r.spec.name)
            usage[result.host] = usage.get(result.host, HostUsage()).plus(d)
            chosen.append((r, result.host))
            compares += [*r.compares, Compare(keys.PLACEMENT + r.spec.name, 0)]
            writes += [
                *r.ops,
                put(keys.PLACEMENT + r.spec.name, Placement(host=result.host, at=self.clock())),
                event_op(
                    r.actor,
                    f"vm/{r.spec.name}",
                    "placed",
                    f"on {result.host}",
                    self.clock(),
                    ids=self.ids,
                ),
            ]
        if not chosen:
            return left
        writes.append(Put(keys.SCHED_EPOCH, str(n).encode()))
        ok = self.store.commit(compares, writes)
        if ok is None:
            return left + [r for r, _ in chosen]  # someone placed meanwhile: decide again
        before, after = self.view.applied(writes, ok, _USAGE_PREFIXES)
        if self._usage is not None and self._usage[0] == before and self._usage[1] is base:
            # Only these placements changed VMs and placements: keep the running count.
            self._usage = (after, usage)
        for r, host in chosen:
            r.host, r.done = host, True
        return left

    def _claim_macs(
        self, r: _PlaceRequest, claimed: set[str], writes: list[Put | Delete]
    ) -> list[Compare]:
        """Give the new VM of ``r`` MACs no VM holds, in the store or ``claimed`` by this
        group: its own if free, else new ones. Adds its spec and the MAC keys to ``writes``;
        returns the compares that hold only while those keys are absent."""
        own = [n.mac for n in r.spec.nics]

        def taken(mac: str) -> bool:
            return mac in claimed or self.view.get(keys.MACS + mac) is not None

        if len(set(own)) < len(own) or any(taken(m) for m in own):
            fresh = zip(r.spec.nics, draw_macs(len(own), taken, self.mac_bits), strict=True)
            nics = tuple(Nic(network=n.network, mac=m) for n, m in fresh)
            r.spec = r.spec.model_copy(update={"nics": nics})
        mac_keys = [keys.MACS + n.mac for n in r.spec.nics]
        claimed.update(n.mac for n in r.spec.nics)
        writes += [put(keys.VMS + r.spec.name, r.spec)]
        writes += [Put(k, r.spec.name.encode()) for k in mac_keys]
        return [Compare(k, 0) for k in mac_keys]

    def _sched_hosts(self) -> list[SchedHost]:
        alive = {e.key[len(keys.ALIVE) :] for e in self.view.range(keys.ALIVE)}
        maint = {e.key[len(keys.MAINTENANCE) :] for e in self.view.range(keys.MAINTENANCE)}
        return [
            SchedHost(
                name,
                name in alive,
                rec.schedulable and name not in maint,
                rec.cpus,
                rec.memory_mib,
                frozenset(rec.pools),
                frozenset(rec.networks),
                frozenset(rec.cpu_models),
                frozenset(rec.cpu.features) if rec.cpu else frozenset(),
            )
            for name, (rec, _) in sorted(self.view.models(HostRecord, keys.HOSTS).items())
        ]

    def _cluster_usage(self) -> dict[str, HostUsage]:
        """Per-host usage for the scheduler, recounted only when someone else changed VMs or
        placements since the last count."""
        versions = self.view.versions(_USAGE_PREFIXES)
        if self._usage is None or self._usage[0] != versions:
            self._usage = (versions, usage_of(self._placed()))
        return self._usage[1]

    def _placed(self) -> list[Placed]:
        specs = self.view.models(VMSpec, keys.VMS)
        out = []
        memo = self._placed_memo
        for v, (p, prev) in self.view.models(Placement, keys.PLACEMENT).items():
            if v not in specs:
                continue
            stamp = (specs[v][1], prev)
            hit = memo.get(v)
            if hit is None or hit[0] != stamp:
                hit = (stamp, Placed(demand(specs[v][0]), p.host))
                memo[v] = hit
            out.append(hit[1])
        # A VM on its way to a host already uses that host's capacity.
        for v, (m, _) in self.view.models(Migration, keys.MIGRATIONS).items():
            if v in specs:
                out.append(Placed(demand(specs[v][0]), m.target))
        return out

    def place_unplaced(self, actor: str, fence: Fence = NO_FENCE) -> list[str]:
        """Place every VM that has no host yet (the scheduler controller's pass, under the
        leader's ``fence``)."""
        self.view.sync()
        placements = self.view.models(Placement, keys.PLACEMENT)
        done = []
        for name, (spec, rev) in self.view.models(VMSpec, keys.VMS).items():
            if name in placements or spec.deleting:
                continue
            try:
                self._place_and_commit(
                    spec,
                    [*fence.compares, Compare(keys.VMS + name, rev)],
                    [],
                    actor,
                    on_lost=lambda: None,
                )
                done.append(name)
            except Conflict:
                fence.check(self.store)
                continue
        return done

    def power(self, name: str, action: str, force: bool, actor: str) -> Task:
        spec, rev = self._spec(name)
        if spec.deleting:
            raise Conflict(f"vm {name} is being deleted")
        task = new_task(f"vm.{action}", f"vm/{name}", actor, self.clock(), ids=self.ids)
        if action == "start":
            change: dict[str, object] = {"power": Power.RUNNING}
        elif action == "stop":
            change = {"power": Power.STOPPED, "stop_mode": "force" if force else "acpi"}
        elif action == "reboot":
            if spec.power != Power.RUNNING:
                raise Conflict(f"vm {name} is stopped; start it instead of rebooting it")
            change = {
                "reboot_generation": spec.reboot_generation + 1,
                "reboot_mode": "reset" if force else "acpi",
            }
        else:
            raise Invalid(f"action: {action!r} is not start, stop or reboot", "action")
        self._update(spec, rev, change, task, actor)
        return task

    def delete(self, name: str, actor: str) -> Task:
        spec, rev = self._spec(name)
        task = new_task("vm.delete", f"vm/{name}", actor, self.clock(), ids=self.ids)
        if self.store.get(keys.PLACEMENT + name) is None:
            # never placed: nothing exists on any host
            ops: list[Put | Delete] = [
                put(
                    keys.TASKS + task.id,
                    task.model_copy(
                        update={
                            "state": TaskState.SUCCEEDED,
                            "progress": 1.0,
                            "message": f"{name} deleted",
                        }
                    ),
                )
            ]
            ops += [Delete(keys.VMS + name), *(Delete(keys.MACS + n.mac) for n in spec.nics)]
            if self._commit([Compare(keys.VMS + name, rev)], ops) is None:
                raise Conflict(f"vm {name} changed meanwhile; try again")
            return task
        self._update(spec, rev, {"deleting": True, "power": Power.STOPPED}, task, actor)
        return task

    def _update(
        self, spec: VMSpec, rev: int, change: dict[str, object], task: Task, actor: str
    ) -> None:
        updated = spec.model_copy(update={**change, "task": task.id})
        ops: list[Put | Delete] = [
            put(keys.VMS + spec.name, updated),
            put(keys.TASKS + task.id, task),
            event_op(
                actor,
                f"vm/{spec.name}",
                task.kind.removeprefix("vm."),
                f"requested ({task.id})",
                task.updated_at,
                ids=self.ids,
            ),
        ]
        ops += self._cancel_ops(spec.task, f"superseded by {task.id}")
        if self._commit([Compare(keys.VMS + spec.name, rev)], ops) is None:
            raise Conflict(f"vm {spec.name} changed meanwhile; try again")

    # -- pools, networks, images ---------------------------------------------------------
    def _create(self, key: str, model: Pool | Network | Image, kind: str, actor: str) -> None:
        ok = self._commit(
            [Compare(key, 0)],
            [
                put(key, model),
                event_op(actor, f"{kind}/{model.name}", "created", "", self.clock(), ids=self.ids),
            ],
        )
        if ok is None:
            raise Conflict(f"name: {kind} {model.name} already exists", "name")

    def create_pool(self, req: PoolCreate, actor: str) -> Pool:
        pool = Pool(name=req.name, kind=req.kind, path=req.path)
        self._create(keys.POOLS + req.name, pool, "pool", actor)
        return pool

    def create_network(self, req: NetworkCreate, actor: str) -> Network:
        net = Network(name=req.name, bridge=req.bridge)
        self._create(keys.NETWORKS + req.name, net, "network", actor)
        return net

    def import_image(self, req: ImageImport, actor: str) -> Image:
        if load(self.store, Pool, keys.POOLS + req.pool) is None:
            raise Conflict(f"pool: no pool named {req.pool}", "pool")
        image = Image(
            name=req.name,
            pool=req.pool,
            path=req.path,
            format=req.format,
            size_gib=req.size_gib,
            created_at=self.clock(),
        )
        self._create(keys.IMAGES + req.name, image, "image", actor)
        return image

    def pools(self) -> list[Pool]:
        return [p for p, _ in load_all(self.store, Pool, keys.POOLS).values()]

    def networks(self) -> list[Network]:
        return [n for n, _ in load_all(self.store, Network, keys.NETWORKS).values()]

    def images(self) -> list[Image]:
        return [i for i, _ in load_all(self.store, Image, keys.IMAGES).values()]

    # -- tasks, events -------------------------------------------------------------------
    def tasks(self, limit: int = 100) -> list[Task]:
        tasks = [t for t, _ in load_all(self.store, Task, keys.TASKS).values()]
        return sorted(tasks, key=lambda t: t.created_at, reverse=True)[:limit]

    def task(self, task_id: str) -> Task:
        found = load(self.store, Task, keys.TASKS + task_id)
        if found is None:
            raise NotFound(f"task {task_id} does not exist", "task_id")
        return found[0]

    def events(self, limit: int = 100, obj: str | None = None) -> list[Event]:
        evs = [decode(Event, e) for e in self.store.range(keys.EVENTS)]
        if obj:
            evs = [e for e in evs if e.object == obj]
        return evs[-limit:]
