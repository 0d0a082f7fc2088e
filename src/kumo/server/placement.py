"""Placement: the pure scheduler decides, and this commits the decision together with the
VM, guarded by ``sched-epoch``, so two placements racing on any API replica cannot both use
the same free capacity; the loser decides again on fresh state.

Requests that arrive while a placer waits on etcd queue up, and the next placer decides
them all and commits them in one transaction (group commit). A new VM's MACs are claimed
in the same transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from kumo.model.vm import Migration, Nic, Placement, VMSpec
from kumo.scheduler.demand import demand
from kumo.scheduler.placement import Chosen, HostUsage, Placed, place, usage_of
from kumo.server.errors import Conflict
from kumo.server.macs import NoFreeMac, draw_macs
from kumo.server.state import ClusterState
from kumo.store import keys
from kumo.store.activity import event_op
from kumo.store.base import Compare, Delete, Put
from kumo.store.lease import NO_FENCE, Fence
from kumo.store.records import put

PLACEMENT_RETRIES = 20
# etcd's default --max-txn-ops: a transaction holds at most this many compares, and as many
# writes. A group commit takes requests while their operations fit (25 one-NIC VMs).
MAX_TXN_OPS = 128
_USAGE_PREFIXES = (keys.VMS, keys.PLACEMENT, keys.MIGRATIONS)


@dataclass
class PlaceRequest:
    spec: VMSpec
    compares: list[Compare]
    ops: list[Put]
    actor: str
    on_lost: Callable[[], None]
    new: bool = False  # a new VM: its spec and its MAC keys are written with its placement
    host: str | None = None
    error: Exception | None = None
    done: bool = False


def _txn_ops(r: PlaceRequest) -> int:
    """The compares or writes ``r`` adds to a group commit, whichever are more: its own,
    the placement (and its event); for a new VM, its spec and a key a MAC."""
    nics = len(r.spec.nics) if r.new else 0
    return max(len(r.compares) + 1 + nics, len(r.ops) + 2 + (1 + nics if r.new else 0))


def _take_batch(queue: list[PlaceRequest]) -> tuple[list[PlaceRequest], list[PlaceRequest]]:
    """The first requests of ``queue`` whose operations fit one transaction (at least one),
    and the rest."""
    room, n = MAX_TXN_OPS - 1, 0  # 1: the sched-epoch compare and write
    while n < len(queue) and (n == 0 or _txn_ops(queue[n]) <= room):
        room -= _txn_ops(queue[n])
        n += 1
    return queue[:n], queue[n:]


class Placer:
    def __init__(self, state: ClusterState) -> None:
        self.state = state
        # Placed VMs as the scheduler sees them, per (spec, placement) revision.
        self._placed_memo: dict[str, tuple[tuple[int, int], Placed]] = {}
        self._placing = threading.Lock()
        self._queue_lock = threading.Lock()
        self.queue: list[PlaceRequest] = []
        self._usage: tuple[tuple[int, ...], dict[str, HostUsage]] | None = None

    def place_and_commit(
        self,
        spec: VMSpec,
        compares: list[Compare],
        ops: list[Put],
        actor: str,
        on_lost: Callable[[], None],
        new: bool = False,
    ) -> tuple[str, VMSpec]:
        """Place ``spec`` and commit it with ``compares`` and ``ops``: the host and the spec
        as committed (a new VM's MACs may have been drawn again). ``on_lost`` raises
        Conflict when the request can no longer hold (checked before each decision)."""
        # One placer at a time per replica (concurrent ones would only lose the sched-epoch
        # race to each other). Requests that arrive while it waits on etcd queue up, and the
        # next placer decides them all and commits them in one transaction (group commit).
        req = PlaceRequest(spec, compares, ops, actor, on_lost, new)
        with self._queue_lock:
            self.queue.append(req)
        while not req.done:
            with self._placing:
                with self._queue_lock:
                    batch, self.queue = _take_batch(self.queue)
                if batch:
                    self.place_batch(batch)
        if req.error is not None:
            raise req.error
        assert req.host is not None
        return req.host, req.spec

    def place_batch(self, batch: list[PlaceRequest]) -> None:
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
            self.state.view.sync()
            fresh = True
        for r in pending:
            r.error = Conflict("placement: too many concurrent placements; try again", "placement")
            r.done = True

    def _place_group(self, batch: list[PlaceRequest], final: bool) -> list[PlaceRequest]:
        """One round: decide every request against the running usage and commit all those
        placed in one transaction. Returns the requests left for another round."""
        st = self.state
        left: list[PlaceRequest] = []
        names: set[str] = set()
        epoch = st.view.get(keys.SCHED_EPOCH)
        epoch_rev = epoch.mod_revision if epoch else 0
        n = int(epoch.value or b"0") + 1 if epoch else 1
        base = self._cluster_usage()
        usage = dict(base)
        hosts = st.sched_hosts()
        chosen: list[tuple[PlaceRequest, str]] = []
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
            result = place(d, hosts, usage, st.policy)
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
                put(keys.PLACEMENT + r.spec.name, Placement(host=result.host, at=st.clock.now())),
                event_op(
                    r.actor,
                    f"vm/{r.spec.name}",
                    "placed",
                    f"on {result.host}",
                    st.clock.now(),
                    ids=st.ids,
                ),
            ]
        if not chosen:
            return left
        writes.append(Put(keys.SCHED_EPOCH, str(n).encode()))
        ok = st.store.commit(compares, writes)
        if ok is None:
            return left + [r for r, _ in chosen]  # someone placed meanwhile: decide again
        before, after = st.view.applied(writes, ok, _USAGE_PREFIXES)
        if self._usage is not None and self._usage[0] == before and self._usage[1] is base:
            # Only these placements changed VMs and placements: keep the running count.
            self._usage = (after, usage)
        for r, host in chosen:
            r.host, r.done = host, True
        return left

    def _claim_macs(
        self, r: PlaceRequest, claimed: set[str], writes: list[Put | Delete]
    ) -> list[Compare]:
        """Give the new VM of ``r`` MACs no VM holds, in the store or ``claimed`` by this
        group: its own if free, else new ones. Adds its spec and the MAC keys to ``writes``;
        returns the compares that hold only while those keys are absent."""
        own = [n.mac for n in r.spec.nics]
        view = self.state.view

        def taken(mac: str) -> bool:
            return mac in claimed or view.get(keys.MACS + mac) is not None

        if len(set(own)) < len(own) or any(taken(m) for m in own):
            fresh = zip(r.spec.nics, draw_macs(len(own), taken, self.state.mac_bits), strict=True)
            nics = tuple(Nic(network=n.network, mac=m) for n, m in fresh)
            r.spec = r.spec.model_copy(update={"nics": nics})
        mac_keys = [keys.MACS + n.mac for n in r.spec.nics]
        claimed.update(n.mac for n in r.spec.nics)
        writes += [put(keys.VMS + r.spec.name, r.spec)]
        writes += [Put(k, r.spec.name.encode()) for k in mac_keys]
        return [Compare(k, 0) for k in mac_keys]

    def _cluster_usage(self) -> dict[str, HostUsage]:
        """Per-host usage for the scheduler, recounted only when someone else changed VMs or
        placements since the last count."""
        versions = self.state.view.versions(_USAGE_PREFIXES)
        if self._usage is None or self._usage[0] != versions:
            self._usage = (versions, usage_of(self.placed()))
        return self._usage[1]

    def placed(self) -> list[Placed]:
        """Every placed VM's demand on its host, and a migrating VM's on its target too."""
        view = self.state.view
        specs = view.models(VMSpec, keys.VMS)
        out = []
        memo = self._placed_memo
        for v, (p, prev) in view.models(Placement, keys.PLACEMENT).items():
            if v not in specs:
                continue
            stamp = (specs[v][1], prev)
            hit = memo.get(v)
            if hit is None or hit[0] != stamp:
                hit = (stamp, Placed(demand(specs[v][0]), p.host))
                memo[v] = hit
            out.append(hit[1])
        # A VM on its way to a host already uses that host's capacity.
        for v, (m, _) in view.models(Migration, keys.MIGRATIONS).items():
            if v in specs:
                out.append(Placed(demand(specs[v][0]), m.target))
        return out

    def place_unplaced(self, actor: str, fence: Fence = NO_FENCE) -> list[str]:
        """Place every VM that has no host yet (the scheduler controller's pass, under the
        leader's ``fence``)."""
        view = self.state.view
        view.sync()
        placements = view.models(Placement, keys.PLACEMENT)
        done = []
        for name, (spec, rev) in view.models(VMSpec, keys.VMS).items():
            if name in placements or spec.deleting:
                continue
            try:
                self.place_and_commit(
                    spec,
                    [*fence.compares, Compare(keys.VMS + name, rev)],
                    [],
                    actor,
                    on_lost=lambda: None,
                )
                done.append(name)
            except Conflict:
                fence.check(self.state.store)
                continue
        return done
