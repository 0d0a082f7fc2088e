"""The leader's HA pass: fence hosts whose lease is gone, run their HA VMs again elsewhere,
and let a host that came back rejoin (docs/adr/0008-high-availability.md).

1. **Fence.** A registered host with no alive key (its agent's lease expired) is fenced once
   this leader has seen it gone for ``grace_s``, counted on the leader's own monotonic clock
   from when it first saw the key missing (a new leader counts anew: later, never sooner).
   The write is conditioned on the alive key still being absent: an agent that renewed or
   registered meanwhile wins. By then the host's agent has destroyed its HA domains itself
   (it does so before its lease can expire, ADR 0008), and virtlockd's disk leases stop a
   stale QEMU from opening a disk anywhere else.
2. **Recover.** The HA VMs (mode ``restart``, meant to run, not being deleted or migrated)
   placed on fenced hosts are placed again by :func:`kumo.ha.recovery.plan_recovery`, highest
   priority first, under every hard rule of the scheduler. The placements are committed in
   transactions conditioned on the leader's fence, each fenced host's record (its revision is
   the fencing token), the VMs' placements and the scheduler's epoch. A VM that fits nowhere
   is ``recovering`` (``/kumo/ha/<vm>``) with the reason, and is tried again every pass.
3. **Rejoin.** A fenced host whose agent holds a lease again is unfenced; VMs still placed on
   it (HA ``off`` ones, those that found no room) run there again. Its agent starts nothing
   while the host is fenced, and removes the domains of VMs that now run elsewhere.
4. **Failed starts** (Proxmox's policy, :func:`kumo.ha.recovery.answer_failed_start`). An HA
   VM's agent that could not start it reports ``error`` with the placement revision it failed
   under (``VMStatus.start_failed``) and does not try again by itself. The leader answers:
   retry there (``max_restart`` times: it writes the placement again, a new revision the
   agent acts on), then relocate (``max_relocate`` times: the scheduler's rules, away from
   every host where it failed), then ``error`` with the last failure. Each answer is one
   transaction conditioned on the failed report, the placement, the HA record and the
   leader's fence; the counts live in ``/kumo/ha/<vm>`` until the VM runs.
5. **Failback** (kumo.server.failback): a ``failback`` VM goes back to its preferred host by
   live migration once that host has been up for the stabilisation period.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kumo.ha.recovery import (
    AfterFailedStart,
    Orphan,
    Restart,
    Waits,
    answer_failed_start,
    plan_recovery,
)
from kumo.model.ha import FencedHost, HAMode, HASettings, HAStatus, RecoveryState
from kumo.model.host import HostRecord
from kumo.model.vm import Migration, Placement, Power, VMSpec, VMState, VMStatus
from kumo.scheduler.demand import ha_demand
from kumo.scheduler.placement import Chosen, NoValidHost, place
from kumo.server.failback import Failback
from kumo.server.placement import Placer
from kumo.server.state import ClusterState
from kumo.store import keys
from kumo.store.base import Compare, Delete, Put
from kumo.store.lease import NO_FENCE, Fence
from kumo.store.records import decode, put

log = logging.getLogger("kumo.ha")
ACTOR = "controller:ha"
# Puts and deletes a recovery transaction may carry (etcd refuses more than 128 operations,
# compares included): a VM costs a placement, an event and a status delete, plus a compare.
MAX_RECOVERIES_PER_TXN = 25


@dataclass(frozen=True)
class Recovered:
    vm: str
    host: str
    was_on: str


def wants_recovery(spec: VMSpec) -> bool:
    return spec.ha.mode == HAMode.RESTART and spec.power == Power.RUNNING and not spec.deleting


class HAManager:
    def __init__(self, state: ClusterState, placer: Placer) -> None:
        self.state = state
        self.placer = placer
        self.gone_since: dict[str, float] = {}  # host -> when this leader first saw it gone
        self.failback = Failback(state, placer, ACTOR)

    def settings(self) -> HASettings:
        entry = self.state.view.get(keys.HA_SETTINGS)
        return decode(HASettings, entry) if entry else HASettings()

    # -- the pass -------------------------------------------------------------------------
    def run(self, now: float, fence: Fence = NO_FENCE) -> float | None:
        """One pass at ``now`` (this process's monotonic clock). Returns when to look again:
        soon while a host is on its way to being fenced."""
        st = self.state
        st.view.sync()
        settings = self.settings()
        hosts = st.view.models(HostRecord, keys.HOSTS)
        alive = st.alive()
        fenced = st.view.models(FencedHost, keys.FENCED)
        # a host going down cleanly (a reboot) is neither fenced nor recovered: its VMs wait
        # for it (FrozenHost); an operator's fence still recovers them
        frozen = {e.key[len(keys.FROZEN) :] for e in st.view.range(keys.FROZEN)}
        for h in list(self.gone_since):
            if h in alive or h not in hosts or h in fenced or h in frozen:
                del self.gone_since[h]
        soonest: float | None = None
        for h in sorted(hosts):
            if h in alive or h in fenced or h in frozen:
                continue
            since = self.gone_since.setdefault(h, now)
            left = since + settings.grace_s - now
            if left <= 0:
                self._fence(h, settings.grace_s, fence)
            else:
                soonest = left if soonest is None else min(soonest, left)
        fenced = st.view.models(FencedHost, keys.FENCED)
        for h, (rec, rev) in sorted(fenced.items()):
            if h in alive:
                self._unfence(h, rec, rev, fence)
        self.recover(fence)
        self.answer_failed_starts(fence)
        self.forget_settled(fence)
        self.failback.run(now, settings.stabilisation_s, fence)
        return soonest

    def _fence(self, host: str, grace_s: float, fence: Fence) -> None:
        st = self.state
        now = st.clock.now()
        rec = FencedHost(
            host=host,
            at=now,
            reason=f"no agent lease for {grace_s:g} s (lease expired, then the grace)",
            lease_expired_at=now - grace_s,
            by=ACTOR,
        )
        ok = st.commit(
            [
                *fence.compares,
                Compare(keys.ALIVE + host, 0),
                Compare(keys.FENCED + host, 0),
                Compare(keys.FROZEN + host, 0),
            ],
            [
                put(keys.FENCED + host, rec),
                st.event(ACTOR, f"host/{host}", "fenced", rec.reason),
            ],
        )
        if ok is None:
            fence.check(st.store)  # else: the agent came back meanwhile; nothing to do
            return
        log.warning("host %s fenced: %s", host, rec.reason)

    def _unfence(self, host: str, rec: FencedHost, rev: int, fence: Fence) -> None:
        st = self.state
        alive = st.view.get(keys.ALIVE + host)
        if alive is None:
            return
        placed_here = [
            v for v, (p, _) in st.view.models(Placement, keys.PLACEMENT).items() if p.host == host
        ]
        statuses = st.view.models(HAStatus, keys.HA)
        ok = st.commit(
            [
                *fence.compares,
                Compare(keys.ALIVE + host, alive.mod_revision),
                Compare(keys.FENCED + host, rev),
            ],
            [
                Delete(keys.FENCED + host),
                *[Delete(keys.HA + v) for v in placed_here if v in statuses],
                st.event(
                    ACTOR,
                    f"host/{host}",
                    "unfenced",
                    f"agent holds a lease again (fenced since {rec.at:.1f}: {rec.reason}); "
                    f"{len(placed_here)} VM(s) still placed here run here again",
                ),
            ],
        )
        if ok is None:
            fence.check(st.store)

    # -- recovery -------------------------------------------------------------------------
    def orphans(self, failed: Sequence[str]) -> list[tuple[Orphan, int]]:
        """The HA VMs placed on ``failed`` hosts that want to run, with their placement's
        revision; VMs being migrated are left to their migration (its target settles it)."""
        st = self.state
        specs = st.view.models(VMSpec, keys.VMS)
        migrating = st.view.models(Migration, keys.MIGRATIONS)
        out = []
        for v, (p, rev) in sorted(st.view.models(Placement, keys.PLACEMENT).items()):
            if p.host in failed and v in specs and v not in migrating:
                spec = specs[v][0]
                if wants_recovery(spec):
                    out.append((Orphan(ha_demand(spec), spec.ha.priority, p.host), rev))
        return out

    def recover(self, fence: Fence = NO_FENCE) -> list[Recovered]:
        """Place the HA VMs of every fenced host (see the module docstring)."""
        st = self.state
        fenced = st.view.models(FencedHost, keys.FENCED)
        if not fenced:
            return []
        orphans = self.orphans(sorted(fenced))
        if not orphans:
            return []
        revs = {o.demand.name: rev for o, rev in orphans}
        hosts = [h if h.name not in fenced else replace(h, up=False) for h in st.sched_hosts()]
        gone = {o.demand.name for o, _ in orphans}
        placed = [p for p in self.placer.placed() if p.demand.name not in gone]
        plan = plan_recovery([o for o, _ in orphans], hosts, placed, st.policy)
        done: list[Recovered] = []
        restarts = [d for d in plan if isinstance(d, Restart)]
        for i in range(0, len(restarts), MAX_RECOVERIES_PER_TXN):
            batch = restarts[i : i + MAX_RECOVERIES_PER_TXN]
            if self._commit_restarts(batch, revs, fenced, fence):
                done += [Recovered(d.vm, d.host, d.was_on) for d in batch]
            else:
                break  # something changed: the next pass decides again on fresh state
        self._note_waiting([d for d in plan if isinstance(d, Waits)], fence)
        return done

    def _commit_restarts(
        self,
        batch: list[Restart],
        revs: dict[str, int],
        fenced: dict[str, tuple[FencedHost, int]],
        fence: Fence,
    ) -> bool:
        st = self.state
        epoch = st.store.get(keys.SCHED_EPOCH)
        n = int(epoch.value or b"0") + 1 if epoch else 1
        statuses = st.view.models(HAStatus, keys.HA)
        compares = [
            *fence.compares,
            Compare(keys.SCHED_EPOCH, epoch.mod_revision if epoch else 0),
            *[Compare(keys.FENCED + h, fenced[h][1]) for h in sorted({d.was_on for d in batch})],
            *[Compare(keys.PLACEMENT + d.vm, revs[d.vm]) for d in batch],
        ]
        now = st.clock.now()
        ops: list[Put | Delete] = [Put(keys.SCHED_EPOCH, str(n).encode())]
        for d in batch:
            since = statuses[d.vm][0].since if d.vm in statuses else fenced[d.was_on][0].at
            ops += [
                put(keys.PLACEMENT + d.vm, Placement(host=d.host, at=now)),
                st.event(
                    ACTOR,
                    f"vm/{d.vm}",
                    "recovered",
                    f"host {d.was_on} fenced at {fenced[d.was_on][0].at:.3f}: placed on "
                    f"{d.host} (priority {d.priority}; {now - since:.1f} s after the fence)",
                ),
            ]
            if d.vm in statuses:
                ops.append(Delete(keys.HA + d.vm))
        if st.commit(compares, ops) is None:
            fence.check(st.store)
            return False
        log.warning("recovered %s", ", ".join(f"{d.vm} -> {d.host}" for d in batch))
        return True

    def _note_waiting(self, waits: list[Waits], fence: Fence) -> None:
        """Record why each VM that fits nowhere waits (only when the reason changed)."""
        st = self.state
        statuses = st.view.models(HAStatus, keys.HA)
        for w in waits:
            old = statuses.get(w.vm)
            if old is not None and old[0].reason == w.reason:
                continue
            rec = HAStatus(
                vm=w.vm,
                state=RecoveryState.RECOVERING,
                reason=w.reason,
                since=old[0].since if old else st.clock.now(),
                failed_host=w.was_on,
            )
            ops: list[Put | Delete] = [put(keys.HA + w.vm, rec)]
            if old is None:
                ops.append(
                    st.event(
                        ACTOR,
                        f"vm/{w.vm}",
                        "recovering",
                        f"host {w.was_on} fenced; waiting: {w.reason}",
                    )
                )
            ok = st.commit([*fence.compares, Compare(keys.HA + w.vm, old[1] if old else 0)], ops)
            if ok is None:
                fence.check(st.store)

    # -- failed starts --------------------------------------------------------------------
    def answer_failed_starts(self, fence: Fence = NO_FENCE) -> None:
        """Answer each HA VM's failed start that is not answered yet (module docstring, 4)."""
        st = self.state
        failed = [
            (v, s, rev)
            for v, (s, rev) in st.view.models(VMStatus, keys.VMSTATUS).items()
            if s.state == VMState.ERROR and s.start_failed
        ]
        if not failed:
            return
        specs = st.view.models(VMSpec, keys.VMS)
        placements = st.view.models(Placement, keys.PLACEMENT)
        migrating = st.view.models(Migration, keys.MIGRATIONS)
        statuses = st.view.models(HAStatus, keys.HA)
        alive = st.alive()
        fenced = st.view.models(FencedHost, keys.FENCED)
        for vm, status, status_rev in sorted(failed, key=lambda f: f[0]):
            spec = specs[vm][0] if vm in specs else None
            placed = placements.get(vm)
            old = statuses.get(vm)
            if (
                spec is None
                or not wants_recovery(spec)
                or vm in migrating
                or placed is None
                or placed[0].host != status.host
                or placed[1] != status.start_failed  # answered already: placed again since
                or status.host not in alive
                or status.host in fenced  # recovery's, then
                or (old is not None and old[0].state == RecoveryState.ERROR)
            ):
                continue
            self._answer(spec, status, status_rev, placed[1], old, fence)

    def _answer(
        self,
        spec: VMSpec,
        status: VMStatus,
        status_rev: int,
        placed_rev: int,
        old: tuple[HAStatus, int] | None,
        fence: Fence,
    ) -> None:
        st, vm, host = self.state, spec.name, status.host
        now = st.clock.now()
        decision, rec = answer_failed_start(
            old[0] if old else None,
            vm,
            host,
            status.message,
            spec.ha.max_restart,
            spec.ha.max_relocate,
            now,
        )
        compares = [
            *fence.compares,
            Compare(keys.VMSTATUS + vm, status_rev),
            Compare(keys.PLACEMENT + vm, placed_rev),
            Compare(keys.HA + vm, old[1] if old else 0),
        ]
        ops: list[Put | Delete] = []
        target = host
        if decision == AfterFailedStart.RELOCATE:
            chosen = self._relocation(spec, rec.tried)
            if isinstance(chosen, Chosen):
                target = chosen.host
                epoch = st.store.get(keys.SCHED_EPOCH)
                n = int(epoch.value or b"0") + 1 if epoch else 1
                compares.append(Compare(keys.SCHED_EPOCH, epoch.mod_revision if epoch else 0))
                ops.append(Put(keys.SCHED_EPOCH, str(n).encode()))
                rec = rec.model_copy(update={"reason": f"{rec.reason}: placed on {target}"})
            else:
                decision = AfterFailedStart.ERROR
                rec = rec.model_copy(
                    update={
                        "state": RecoveryState.ERROR,
                        "reason": f"{status.message}; gave up: no other host can take it "
                        f"({chosen})",
                    }
                )
        if decision != AfterFailedStart.ERROR:
            ops.append(put(keys.PLACEMENT + vm, Placement(host=target, at=now)))
        action = {"retry": "start-retry", "relocate": "relocated", "error": "error"}[decision]
        ops += [put(keys.HA + vm, rec), st.event(ACTOR, f"vm/{vm}", action, rec.reason)]
        if st.commit(compares, ops) is None:
            fence.check(st.store)  # else: something changed; the next pass looks again
            return
        log.warning("vm %s: start failed on %s: %s", vm, host, decision.value)

    def _relocation(self, spec: VMSpec, tried: tuple[str, ...]) -> Chosen | NoValidHost:
        """Where a VM that failed to start on every host in ``tried`` may run now."""
        st = self.state
        fenced = st.view.models(FencedHost, keys.FENCED)
        hosts = [
            h if h.name not in fenced else replace(h, up=False)
            for h in st.sched_hosts()
            if h.name not in tried
        ]
        if not hosts:
            return NoValidHost(f"it failed to start on every host ({', '.join(tried)})")
        placed = [p for p in self.placer.placed() if p.demand.name != spec.name]
        return place(ha_demand(spec), hosts, placed, st.policy)

    def forget_settled(self, fence: Fence = NO_FENCE) -> None:
        """Remove the HA records that no longer say anything: the VM runs where it failed to
        start before (the counts start again), or HA no longer wants it running (stopped,
        HA off, deleted: a later start is a fresh one)."""
        st = self.state
        records = st.view.models(HAStatus, keys.HA)
        if not records:
            return
        specs = st.view.models(VMSpec, keys.VMS)
        placements = st.view.models(Placement, keys.PLACEMENT)
        statuses = st.view.models(VMStatus, keys.VMSTATUS)
        for vm, (rec, rev) in sorted(records.items()):
            spec = specs[vm][0] if vm in specs else None
            status = statuses[vm][0] if vm in statuses else None
            placed = placements[vm][0].host if vm in placements else None
            if spec is None or not wants_recovery(spec):
                why = "HA no longer runs it (stopped, HA off or deleted)"
            elif (
                rec.tried
                and status is not None
                and status.state == VMState.RUNNING
                and status.host == placed
            ):
                why = f"runs on {placed} (failed to start before on {', '.join(rec.tried)})"
            else:
                continue
            ok = st.commit(
                [*fence.compares, Compare(keys.HA + vm, rev)],
                [Delete(keys.HA + vm), st.event(ACTOR, f"vm/{vm}", "ha-settled", why)],
            )
            if ok is None:
                fence.check(st.store)
