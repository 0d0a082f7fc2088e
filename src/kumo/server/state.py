"""The cluster as the server's operations see it: the store, this replica's view of it, the
clock, the id source, the placement policy, one ``commit`` and the lookups they share.

Commands, queries, placement, migrations and maintenance each take a ``ClusterState`` and
nothing of each other's insides; this module imports none of them (``scripts/check`` fails on
an import cycle)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence

from kumo.clock import SYSTEM_CLOCK, SYSTEM_IDS, Clock, Ids
from kumo.model.activity import Task, TaskState
from kumo.model.host import HostRecord
from kumo.model.vm import VMSpec
from kumo.scheduler.placement import HostView as SchedHost
from kumo.scheduler.placement import Policy
from kumo.server.errors import NotFound
from kumo.store import keys
from kumo.store.activity import event_op, new_task
from kumo.store.base import ClusterStore, Compare, Delete, Put
from kumo.store.cache import DirectView, StoreCache
from kumo.store.liveness import alive_hosts
from kumo.store.records import load, put


class ClusterState:
    def __init__(
        self,
        store: ClusterStore,
        policy: Policy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        view: StoreCache | DirectView | None = None,
        mac_bits: Callable[[], int] = lambda: secrets.randbits(24),
        ids: Ids = SYSTEM_IDS,
        new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.store = store
        self.policy = policy or Policy()
        self.clock = clock
        self.ids = ids  # task ids and event keys
        self.mac_bits = mac_bits  # random bits for MAC addresses
        self.new_uuid = new_uuid  # a new VM's UUID
        # Lists and placement read this (a watch-fed cache in `kumo server`).
        self.view = view or DirectView(store)

    def commit(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> int | None:
        """Commit, and show the write in this replica's cache at once (read-your-writes)."""
        rev = self.store.commit(compares, ops)
        if rev is not None:
            self.view.applied(ops, rev)
        return rev

    def fresh(self, found: bool) -> bool:
        """Whether a lookup that failed in the cache would fail on etcd's current state too:
        another replica may have just created what we look for."""
        if not found:
            self.view.sync()
        return found

    def event(self, actor: str, obj: str, action: str, message: str) -> Put:
        """An event stamped with this state's clock and ids, to commit with its change."""
        return event_op(actor, obj, action, message, self.clock.now(), ids=self.ids)

    def new_task(self, kind: str, target: str, actor: str) -> Task:
        """A queued task stamped with this state's clock, its id from this state's ids."""
        return new_task(kind, target, actor, self.clock.now(), ids=self.ids)

    # -- lookups ---------------------------------------------------------------------------
    def spec(self, name: str) -> tuple[VMSpec, int]:
        """The VM's spec and its revision, read from the store; NotFound if none."""
        found = load(self.store, VMSpec, keys.VMS + name)
        if found is None:
            raise NotFound(f"vm {name} does not exist", "name")
        return found

    def task(self, task_id: str) -> Task:
        found = load(self.store, Task, keys.TASKS + task_id)
        if found is None:
            raise NotFound(f"task {task_id} does not exist", "task_id")
        return found[0]

    def alive(self) -> set[str]:
        """The hosts up now, as the view sees them (``kumo.store.liveness``)."""
        return alive_hosts(self.view)

    def sched_hosts(self) -> list[SchedHost]:
        """Every registered host as the scheduler sees it: up, schedulable (not in
        maintenance, not degraded), its capacity and what it offers."""
        alive = self.alive()
        maint = {e.key[len(keys.MAINTENANCE) :] for e in self.view.range(keys.MAINTENANCE)}
        maint |= {e.key[len(keys.DEGRADED) :] for e in self.view.range(keys.DEGRADED)}
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

    def cancel_ops(self, task_id: str | None, message: str) -> list[Put | Delete]:
        """The write that cancels ``task_id`` with ``message``, if it is still open."""
        prev = load(self.store, Task, keys.TASKS + task_id) if task_id else None
        if prev is None or prev[0].state.done:
            return []
        now = self.clock.now()
        cancelled = prev[0].model_copy(
            update={"state": TaskState.CANCELLED, "message": message, "updated_at": now}
        )
        return [put(keys.TASKS + prev[0].id, cancelled)]
