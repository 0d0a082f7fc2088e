"""The source agent's side of a migration: each running migration of a VM on this host gets
a thread that measures, chooses a strategy (strategy.py), runs the job, and records the end
— placement, task and event — in the store.

Cold (a stopped VM): undefine the domain here; the disk is on shared storage; the target's
agent defines it there once the placement names it.
Live: probe the link to the target's agent and measure the guest's dirty rate, choose, then
migrate through libvirt with a :class:`Governor` watching. A migration job found already
running (this agent restarted) is watched to its end, not started again.

Every write carries the agent's fence on the placement revision the migration started from
(``Agent.fence``): a cut-off source agent cannot move the placement or end the task.

The migrator sees its agent only through :class:`MigratingAgent` (what it reads and calls),
so this module does not import ``agent.py``, and a test or the simulator may hand it any
object that has those parts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from kumo.agent import http
from kumo.agent.strategy import Governor, Measured, choose
from kumo.clock import Clock, Ids
from kumo.hypervisor.base import (
    Directive,
    DomainState,
    Hypervisor,
    HypervisorError,
    MigrationCancelled,
    MigrationTarget,
)
from kumo.model.activity import MigrationProgress, TaskState
from kumo.model.host import HostRecord, Pool
from kumo.model.vm import Migration, MigrationState, Placement, VMSpec
from kumo.storage.volumes import VolumeError, Volumes
from kumo.store import keys
from kumo.store.activity import event_op, finish_task
from kumo.store.base import ClusterStore, Compare, Delete, Put, StoreUnavailable
from kumo.store.lease import Fence, Fenced
from kumo.store.liveness import alive_hosts
from kumo.store.records import load, put

log = logging.getLogger("kumo.agent.migrate")
PROBE_SECONDS = 0.3
SAMPLE_EVERY_S = 20.0  # background dirty-rate measurements of running VMs
SAMPLE_FRESH_S = 45.0  # a migration uses a sample this recent instead of measuring anew
FAST_ENOUGH_S = 1.0  # the whole memory crosses the link faster: skip the dirty-rate measure
ORPHAN_GRACE_S = 15.0  # the source's liveness key gone this long: the target ends the migration
QUIET_MIB_S = 1.0  # a guest dirtying less converges on any link: the link is not probed


class MigratingAgent(Protocol):
    """What a migration needs of the agent on its host (``kumo.agent.agent.Agent``)."""

    @property
    def config(self) -> MigratingConfig: ...
    @property
    def store(self) -> ClusterStore: ...
    @property
    def hv(self) -> Hypervisor: ...
    @property
    def volumes(self) -> Volumes: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def ids(self) -> Ids: ...
    @property
    def actor(self) -> str: ...

    def fence(self, vm: str | None = None, placement: int = 0) -> Fence: ...
    def commit(
        self, fence: Fence, compares: list[Compare], ops: list[Put | Delete]
    ) -> int | None: ...
    def wake(self) -> None: ...
    def forget_status(self, vm: str) -> None: ...


class MigratingConfig(Protocol):
    """The parts of ``AgentConfig`` a migration reads."""

    @property
    def host(self) -> str: ...
    @property
    def libvirt_uri(self) -> str: ...
    @property
    def migrate_uri(self) -> str: ...
    @property
    def threaded(self) -> bool: ...


class Migrator:
    def __init__(self, agent: MigratingAgent) -> None:
        self.agent = agent
        self.lock = threading.Lock()
        self.migrating: set[str] = set()
        self.placed: dict[str, int] = {}  # vm -> the placement revision its migration acts on
        self.moved_away: dict[str, int] = {}  # vm -> revision of its switch-over elsewhere
        self.probe: Callable[[str, int, str, float], float | None] = http.probe_link
        # asks the target's agent to make (POST) or remove (DELETE) a copied disk's file
        self.incoming: Callable[[HostRecord, str, str, str], tuple[int, str]] = (
            lambda rec, secret, method, vm: http.call(
                rec.address, rec.agent_port, secret, method, f"/v1/incoming/{vm}"
            )
        )
        self.clock: Clock = agent.clock  # intervals: monotonic()
        self.sampled: dict[str, float] = {}  # vm -> when its last background measure began
        self.source_gone: dict[str, float] = {}  # vm -> since when its source looks dead

    def sample(self, running: list[str]) -> None:
        """Keep a recent dirty rate for each running VM (libvirt measures in the
        background, 1 s of page sampling), so a migration need not wait for one."""
        now = self.clock.monotonic()
        for vm, at in list(self.sampled.items()):
            if now - at > SAMPLE_FRESH_S:  # gone, or moving: a migration may still read it
                del self.sampled[vm]
        for vm in running:
            if now - self.sampled.get(vm, -1e9) >= SAMPLE_EVERY_S:
                with contextlib.suppress(HypervisorError):
                    self.agent.hv.start_dirty_rate(vm, 1)
                    self.sampled[vm] = now

    def _sampled_rate(self, vm: str) -> float | None:
        """The background sample, when it is fresh."""
        age = self.clock.monotonic() - self.sampled.get(vm, -1e9)
        if not 2.0 <= age <= SAMPLE_FRESH_S:
            return None
        try:
            return self.agent.hv.last_dirty_rate(vm)
        except HypervisorError:
            return None

    def _dirty_rate(self, vm: str) -> float | None:
        try:
            return self.agent.hv.dirty_rate(vm, 1)
        except HypervisorError:
            return None

    def snapshot(self) -> tuple[set[str], dict[str, int]]:
        with self.lock:
            return set(self.migrating), dict(self.moved_away)

    def start(self, m: Migration, placed: int) -> None:
        """Run ``m`` (once), its VM placed here at revision ``placed``."""
        with self.lock:
            if m.vm in self.migrating:
                return
            self.migrating.add(m.vm)
            self.placed[m.vm] = placed
        if self.agent.config.threaded:
            threading.Thread(
                target=self._run, args=(m,), daemon=True, name=f"migrate-{m.vm}"
            ).start()
        else:
            self._run(m)

    def _run(self, m: Migration) -> None:
        try:
            if m.mode == "cold":
                self._cold(m)
            else:
                self._live(m)
        except (StoreUnavailable, Fenced) as exc:
            log.error("vm %s: migration bookkeeping failed: %s", m.vm, exc)
        finally:
            with self.lock:
                self.migrating.discard(m.vm)
                self.placed.pop(m.vm, None)
            self.agent.wake()

    def _event(self, obj: str, action: str, message: str) -> Put:
        """An event by this host's agent, on its clock and id source."""
        a = self.agent
        return event_op(a.actor, obj, action, message, clock=a.clock, ids=a.ids)

    def _fence(self, vm: str) -> Fence:
        with self.lock:
            return self.agent.fence(vm, self.placed[vm])

    def _commit(self, vm: str, compares: list[Compare], ops: list[Put | Delete]) -> int | None:
        return self.agent.commit(self._fence(vm), compares, ops)

    def _finish(
        self,
        m: Migration,
        state: TaskState,
        message: str,
        progress: float | None = None,
        migration: MigrationProgress | None = None,
    ) -> None:
        """Move the migration's task on, under the fence."""
        fence = self._fence(m.vm).compares
        finish_task(
            self.agent.store,
            m.task,
            state,
            message,
            progress,
            migration,
            fence=fence,
            clock=self.agent.clock,
        )

    # -- cold --------------------------------------------------------------------------
    def _cold(self, m: Migration) -> None:
        hv = self.agent.hv
        here = next((d for d in hv.domains() if d.name == m.vm), None)
        if here is not None and here.state not in (DomainState.SHUTOFF, DomainState.CRASHED):
            self._failed(
                m, f"{m.vm} is {here.state} on {m.source}; cold migration moves a stopped VM"
            )
            return
        self._finish(m, TaskState.RUNNING, f"{m.source} -> {m.target}: cold")
        try:
            if here is not None:
                hv.undefine(m.vm)
        except HypervisorError as exc:
            self._failed(m, f"{exc}; {m.vm} stays on {m.source}")
            return
        self._done(m, None, "cold")

    # -- live --------------------------------------------------------------------------
    def _target(self, m: Migration) -> tuple[MigrationTarget, HostRecord] | None:
        rec = load(self.agent.store, HostRecord, keys.HOSTS + m.target)
        if rec is None:
            return None
        cfg = self.agent.config
        return (
            MigrationTarget(
                host=m.target,
                libvirt_uri=cfg.libvirt_uri.format(address=rec[0].address, host=m.target),
                migrate_uri=cfg.migrate_uri.format(address=rec[0].address, host=m.target),
            ),
            rec[0],
        )

    def measure(self, m: Migration, spec: VMSpec, target: HostRecord) -> Measured:
        """Only what can change the choice: a guest whose fresh background sample shows
        it nearly idle converges on any link, so the link is probed only when it dirties
        memory or page encoding could be used."""
        found = load(self.agent.store, HostRecord, keys.HOSTS + self.agent.config.host)
        mine = found[0] if found else None
        encoding = bool(mine and mine.page_encoding and target.page_encoding)
        seen = Measured(
            memory_mib=spec.memory_mib,
            link_mib_s=None,
            dirty_rate_mib_s=self._sampled_rate(m.vm),
            postcopy=bool(mine and mine.postcopy and target.postcopy),
            encoding=encoding,
        )
        quiet = seen.dirty_rate_mib_s is not None and seen.dirty_rate_mib_s < QUIET_MIB_S
        if quiet and not encoding and not m.policy.bandwidth_mib_s:
            return seen
        secret = self.agent.store.get(keys.AGENT_SECRET)
        link = (
            self.probe(target.address, target.agent_port, secret.value.decode(), PROBE_SECONDS)
            if secret
            else None
        )
        dirty = seen.dirty_rate_mib_s
        if dirty is None and (link is None or spec.memory_mib / link > FAST_ENOUGH_S):
            dirty = self._dirty_rate(m.vm)
        return dataclasses.replace(seen, link_mib_s=link, dirty_rate_mib_s=dirty)

    def _live(self, m: Migration) -> None:
        agent = self.agent
        here = next((d for d in agent.hv.domains() if d.name == m.vm), None)
        if here is None:
            # Already gone from this host: the switch-over happened before we could record
            # it (an agent restart). The VM runs on the target.
            self._done(m, None, "switch-over seen after a restart")
            return
        found = self._target(m)
        spec = load(agent.store, VMSpec, keys.VMS + m.vm)
        if found is None or spec is None:
            self._failed(m, f"target host {m.target} is not registered")
            return
        target, record = found
        if m.copy_storage:
            target = dataclasses.replace(
                target, copy_storage="inc" if spec[0].clone == "linked" else "full"
            )
            code, said = self._to_target(record, "POST", m.vm)
            if code != 200:
                self._failed(m, f"{m.target} could not make the disk for the copy: {said}")
                return
        self._finish(m, TaskState.RUNNING, f"{m.source} -> {m.target}: measuring")
        began = self.clock.monotonic()
        seen = self.measure(m, spec[0], record)
        strategy = choose(m.policy, seen)
        log.info(
            "vm %s: migration to %s picked up %.2f s after the request, measured in %.2f s: %s",
            m.vm,
            m.target,
            agent.clock.now() - m.started_at,
            self.clock.monotonic() - began,
            strategy.reason,
        )
        self._commit(
            m.vm,
            [],
            [
                self._event(
                    f"vm/{m.vm}",
                    "migration-strategy",
                    f"{strategy.name}: {strategy.reason}",
                )
            ],
        )
        governor = Governor(strategy)
        last = [float("-inf")]  # the first progress report is always written
        cancelled = [False]
        latest = [MigrationProgress(strategy=strategy)]

        def watch(p: MigrationProgress) -> Directive:
            p = p.model_copy(update={"strategy": strategy, "downtime_target_ms": governor.downtime})
            latest[0] = p
            if self.clock.monotonic() - last[0] >= 0.5:
                last[0] = self.clock.monotonic()
                done = p.bytes_processed / p.bytes_total if p.bytes_total else 0.0
                self._finish(
                    m,
                    TaskState.RUNNING,
                    f"{m.source} -> {m.target}: {strategy.name}, iteration {p.iteration}",
                    progress=min(done, 0.99),
                    migration=p,
                )
                current = load(agent.store, Migration, keys.MIGRATIONS + m.vm)
                if current is None or current[0].cancel:
                    cancelled[0] = True
                    return Directive(abort=f"migration of {m.vm} to {m.target} cancelled")
            answer = governor.step(p)
            if answer.downtime_ms is not None:
                self._commit(
                    m.vm,
                    [],
                    [
                        self._event(
                            f"vm/{m.vm}",
                            "migration-downtime",
                            f"progress stalled at iteration {p.iteration}: downtime target "
                            f"raised to {answer.downtime_ms} ms",
                        )
                    ],
                )
            return answer

        try:
            try:
                final = agent.hv.migrate(m.vm, target, strategy, watch)
            except HypervisorError:
                if m.copy_storage:  # nothing may be left on the target
                    self._to_target(record, "DELETE", m.vm)
                raise
        except MigrationCancelled as exc:
            self._failed(
                m,
                f"{exc}; {m.vm} runs on {m.source} as before",
                TaskState.CANCELLED if cancelled[0] else TaskState.FAILED,
                latest[0],
            )
            return
        except HypervisorError as exc:
            if self._gone_from_here(m.vm):
                # libvirtd finished the job an earlier agent started while this one was
                # measuring: the domain left with the switch-over (it is undefined here only
                # when the migration succeeded).
                self._done(m, None, "switch-over seen after a restart")
                return
            self._failed(m, f"{exc}; {m.vm} runs on {m.source} as before", progress=latest[0])
            return
        self._done(m, final.model_copy(update={"strategy": strategy}), strategy.name)

    def _gone_from_here(self, vm: str) -> bool:
        try:
            return all(d.name != vm for d in self.agent.hv.domains())
        except HypervisorError:
            return False  # libvirtd cannot say: nothing is known to have moved

    def _to_target(self, record: HostRecord, method: str, vm: str) -> tuple[int, str]:
        secret = self.agent.store.get(keys.AGENT_SECRET)
        if secret is None:
            return 0, "no agent secret in the store"
        return self.incoming(record, secret.value.decode(), method, vm)

    # -- a source host that died ---------------------------------------------------------
    def adopt_orphans(
        self,
        migrations: dict[str, tuple[Migration, int]],
        placements: dict[str, tuple[Placement, int]],
    ) -> None:
        """End, with the truth as this host sees it, a migration to this host whose source
        host has been dead for a while: nobody else can. The VM runs here (the switch-over
        happened): it is placed here. It does not: the migration failed, the VM stays placed
        on its dead host (HA's to restart). Fenced on this agent's token and the placement
        read with ``migrations``."""
        agent = self.agent
        here = agent.config.host
        mine = [(m, rev) for m, rev in migrations.values() if m.target == here]
        for vm in list(self.source_gone):
            if vm not in migrations:
                del self.source_gone[vm]
        if not mine:
            return
        alive = alive_hosts(agent.store)
        now = self.clock.monotonic()
        for m, rev in mine:
            if m.source in alive or m.state != MigrationState.RUNNING:
                self.source_gone.pop(m.vm, None)
                continue
            if now - self.source_gone.setdefault(m.vm, now) < ORPHAN_GRACE_S:
                continue
            dom = next((d for d in agent.hv.domains() if d.name == m.vm), None)
            arrived = dom is not None and dom.state == DomainState.RUNNING
            why = f"source host {m.source} went down mid-migration"
            ops: list[Put | Delete]
            if arrived:
                ops = [
                    put(keys.PLACEMENT + m.vm, Placement(host=here, at=agent.clock.now())),
                    Delete(keys.MIGRATIONS + m.vm),
                    self._event(f"vm/{m.vm}", "migrated", f"{why}; it runs on {here}"),
                ]
                state, message = TaskState.SUCCEEDED, f"{m.vm} now runs on {here} ({why})"
            else:
                ops = [
                    Delete(keys.MIGRATIONS + m.vm),
                    self._event(f"vm/{m.vm}", "migration-failed", why),
                ]
                state = TaskState.FAILED
                message = f"{why}; {m.vm} did not arrive on {here} and stays placed on {m.source}"
            fence = agent.fence(m.vm, placements[m.vm][1] if m.vm in placements else 0)
            done = agent.commit(fence, [Compare(keys.MIGRATIONS + m.vm, rev)], ops)
            if done is not None:
                if arrived:  # placed here by that very write
                    fence = agent.fence(m.vm, done)
                finish_task(
                    agent.store, m.task, state, message, fence=fence.compares, clock=agent.clock
                )
                self.source_gone.pop(m.vm, None)

    # -- the end -----------------------------------------------------------------------
    def _done(self, m: Migration, final: MigrationProgress | None, how: str) -> None:
        agent = self.agent
        rev = self._commit(
            m.vm,
            [],
            [
                put(keys.PLACEMENT + m.vm, Placement(host=m.target, at=agent.clock.now())),
                Delete(keys.MIGRATIONS + m.vm),
                self._event(f"vm/{m.vm}", "migrated", f"{m.source} -> {m.target} ({how})"),
            ],
        )
        with self.lock:
            # Set before the VM leaves `migrating`: a pass that read the old placement skips it.
            self.moved_away[m.vm] = rev or 0
            self.placed[m.vm] = rev or 0  # our own write: what the rest of the end acts on
        agent.forget_status(m.vm)
        if m.copy_storage:
            spec = load(agent.store, VMSpec, keys.VMS + m.vm)
            pool = load(agent.store, Pool, keys.POOLS + spec[0].pool) if spec else None
            if pool is not None:  # the copy on the target is the disk now
                try:
                    agent.volumes.delete(pool[0].path, m.vm)
                except VolumeError as exc:
                    log.error("vm %s: could not remove the old disk here: %s", m.vm, exc)
        summary = f"{m.vm} now {'runs' if m.mode == 'live' else 'is'} on {m.target}"
        if final is not None:
            pause = (
                f"downtime {final.downtime_ms:.0f} ms, " if final.downtime_ms is not None else ""
            )
            summary += f" ({pause}{final.elapsed_s:.1f} s, {how})"
        self._finish(m, TaskState.SUCCEEDED, summary, migration=final)

    def _failed(
        self,
        m: Migration,
        reason: str,
        state: TaskState = TaskState.FAILED,
        progress: MigrationProgress | None = None,
    ) -> None:
        self._commit(
            m.vm,
            [],
            [
                Delete(keys.MIGRATIONS + m.vm),
                self._event(f"vm/{m.vm}", "migration-" + state.value, reason),
            ],
        )
        self._finish(m, state, reason, migration=progress)
