"""The host agent (composition root): keeps its host alive in etcd, and makes every VM
placed on its host real in libvirt.

- ``register()`` grants a lease, writes the liveness key under it and the host record;
- ``keepalive()`` renews the lease (a thread, every second); a lost lease re-registers;
- every write about a VM, and to the host record, carries ``fence()``: the alive key's
  revision (this agent's token) and, for a VM, the placement revision the agent acted on. A
  cut-off or replaced agent, or one whose VM was placed elsewhere, is refused by the store;
- ``check_paths()`` is one round of the network-path monitor: ping the public network's
  routers and the NAS, judge both paths (paths.py, dampened), and report the judgement
  (``/kumo/paths/<host>``, under the lease like the alive key) with an event when it changes.
  The daemon runs it every ``path_interval_s`` on its own thread; the simulator each tick;
- ``run_once()`` is one level-triggered pass over the VMs placed here: read spec, placement
  and libvirt, :func:`decide`, act, report status, finish tasks; then stop and undefine
  the kumo domains here whose VM is placed on another host (strays.py). The daemon calls
  it in a loop woken by etcd watches and libvirt events, with a periodic resync; tests and
  the simulator call it directly.

Restarting the agent changes nothing that runs: a running domain that matches its spec
needs no action, so it is adopted as it is.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Literal

from kumo.agent import watchdog
from kumo.agent.decide import Action, Observed, decide, report
from kumo.agent.http import call as http_call
from kumo.agent.migrator import Migrator
from kumo.agent.paths import Dampening, PathMonitor, describe, path_targets, screen
from kumo.agent.ping import Probe, ProbeError, icmp_probe
from kumo.agent.selffence import Fenced as SelfFenced
from kumo.agent.selffence import PeerAnswer, SelfFence
from kumo.agent.strays import Seen, Verdict, judge, strays
from kumo.clock import SYSTEM_CLOCK, SYSTEM_IDS, Clock, Ids, SystemIds
from kumo.hypervisor.base import (
    Domain,
    DomainState,
    HostFacts,
    Hypervisor,
    HypervisorError,
    PauseReason,
)
from kumo.hypervisor.domain import CPUConfig, DiskConfig, DomainConfig, NicConfig, config_digest
from kumo.model.activity import TaskState
from kumo.model.cpu import CLUSTER_DEFAULT, ClusterCPU, CPUDef
from kumo.model.ha import FrozenHost, HAMode, HASettings
from kumo.model.host import (
    HostPaths,
    HostRecord,
    Image,
    NetPath,
    Network,
    PathState,
    Pool,
    nbd_server,
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
from kumo.provision.cloudinit import nocloud
from kumo.scheduler.cpu import baseline_inputs, digest, stale
from kumo.storage.pool_identity import DirPoolIds, PoolIds, check_shared_pool
from kumo.storage.volumes import DiskFormat, VolumeError, Volumes
from kumo.store import keys
from kumo.store.activity import event_op, finish_task
from kumo.store.base import ClusterStore, Compare, Delete, LeaseExpired, Put, StoreUnavailable
from kumo.store.lease import Fence, Fenced, LeaseKeeper
from kumo.store.records import load, load_all, put

log = logging.getLogger("kumo.agent")
PEERS_EVERY_S = 5.0  # the other hosts are read again this often (for self-fencing's witnesses)
ROUTE_RECHECK_S = 60.0  # a ping target's route is looked up again this often


@dataclass(frozen=True)
class AgentConfig:
    host: str
    address: str
    domain_type: Literal["kvm", "qemu"]
    agent_port: int = 8776
    lease_ttl: int = 5
    serial_log_dir: str = "/var/log/libvirt/qemu"
    # How this agent's libvirtd reaches another host's, and where QEMU streams memory to:
    # the other host's cluster (storage) address. Plain TCP in the lab; qemu+tls in a site.
    libvirt_uri: str = "qemu+tcp://{address}/system"
    migrate_uri: str = "tcp://{address}"
    threaded: bool = True  # migrations run in their own threads (False: inline, for tests)
    # VMs reconciled at once in a pass (threaded only). Starting a domain takes libvirt and
    # QEMU about half a second: a host taking over a dead host's VMs starts them side by
    # side instead of one after the other (bench/failover: 8 VMs).
    workers: int = 4


@dataclass
class _Memory:
    """What the agent remembers between passes (lost on restart, by design)."""

    stop_since: dict[str, float] = field(default_factory=dict)
    reboot_done: dict[str, int] = field(default_factory=dict)
    last_status: dict[str, VMStatus] = field(default_factory=dict)
    pool_problems: dict[str, str] = field(default_factory=dict)  # pool -> why unavailable
    unknown_domains: set[str] = field(default_factory=set)  # kumo domains of no placed VM: logged
    io_paused: dict[str, float] = field(default_factory=dict)  # vm -> seen paused on I/O error


def disk_format(pool: Pool) -> DiskFormat:
    """Raw for a pool exported over NBD (an export cannot grow), else qcow2."""
    return "raw" if pool.nbd is not None else "qcow2"


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        store: ClusterStore,
        hv: Hypervisor,
        volumes: Volumes,
        clock: Clock = SYSTEM_CLOCK,
        path_exists: Callable[[str], bool] = os.path.exists,
        pool_ids: PoolIds | None = None,
        new_id: Callable[[], str] | None = None,
        ids: Ids = SYSTEM_IDS,
        probe: Probe = icmp_probe,
        kill_guests: Callable[[], list[str]] = lambda: [],
        route_problem: Callable[[str], str] = lambda _address: "",
    ) -> None:
        """``kill_guests``: SIGKILL to every HA guest's QEMU on this host, for self-fencing
        (the daemon passes the watchdog's ``bite``; none in simulations and tests).
        ``route_problem``: why a ping target would not test this host's path ("" if it would;
        the daemon passes ``ping.route_problem``, the kernel's route to it)."""
        self.config = config
        self.store = store
        self.hv = hv
        self.volumes = volumes
        self.clock = clock
        self.path_exists = path_exists
        self.pool_ids = pool_ids if pool_ids is not None else DirPoolIds()
        self.ids = ids  # event keys' tails
        # a shared pool's id, when this host is the first to see it
        self.new_id = new_id if new_id is not None else SystemIds(32).new_id
        self.keeper = LeaseKeeper(store, config.lease_ttl, clock)
        self.token = 0  # mod revision of our alive key: every fenced write compares it
        self.mem = _Memory()
        self.actor = f"agent:{config.host}"
        self.on_wake: Callable[[], None] = lambda: None  # the daemon's wake-up
        self.migrator = Migrator(self)
        self.secret = ""  # the agent secret as last read: peers are asked even without etcd
        self.peer_addrs: dict[str, tuple[str, int]] = {}  # other hosts' agents
        self.peers_read = float("-inf")  # when a pass last read them (monotonic)
        self.self_fence = SelfFence(
            config.host, self.keeper, hv, clock, self._ask_peer, kill=kill_guests
        )
        self._pool_executor: ThreadPoolExecutor | None = None  # made at the first busy pass
        self.frozen = False  # freeze(): the host is going down cleanly; start nothing more
        # the network-path monitor (check_paths): pings through ``probe``, judged by ``paths``
        self.probe = probe
        self.paths = PathMonitor()
        self.path_interval_s = HASettings().path_interval_s
        self._dampening = Dampening.of(HASettings())
        self._path_targets: dict[NetPath, tuple[str, ...]] = {}
        self._path_notes: dict[NetPath, str] = {}  # configured targets not pinged, and why
        self.route_problem = route_problem
        self._routes: dict[str, tuple[float, str]] = {}  # target -> (checked, problem)
        self._path_config_read = False  # targets and timings read once at least
        self._paths_lock = threading.Lock()  # check_paths' thread and a re-registration
        self._paths_written: tuple[HostPaths, int] | None = None  # (record less ``at``, lease)
        self._path_events: list[Put] = []  # judgements not yet written (the store out of reach)
        self._probe_error = ""  # as last logged

    # -- liveness --------------------------------------------------------------------
    @property
    def lease(self) -> int:
        return self.keeper.lease

    def fence(self, vm: str | None = None, placement: int = 0) -> Fence:
        """The compares of this agent's writes: its alive key is the one it put, and, for
        ``vm``, its placement is still at revision ``placement`` (the one acted on)."""
        fence = Fence(f"agent {self.config.host}").on(keys.ALIVE + self.config.host, self.token)
        return fence if vm is None else fence.on(keys.PLACEMENT + vm, placement)

    def commit(self, fence: Fence, compares: list[Compare], ops: list[Put | Delete]) -> int | None:
        """Commit under ``fence``; :class:`Fenced` when the fence no longer holds."""
        rev = self.store.commit([*fence.compares, *compares], ops)
        if rev is None:
            fence.check(self.store)
        return rev

    def _event(
        self, actor: str, obj: str, action: str, message: str, at: float | None = None
    ) -> Put:
        """An event stamped by this agent's clock and keyed by its id source."""
        return event_op(actor, obj, action, message, at, clock=self.clock, ids=self.ids)

    def register(self) -> None:
        facts = self.hv.facts()
        lease = self.keeper.grant()
        existing = load(self.store, HostRecord, keys.HOSTS + self.config.host)
        cpu, cpu_models = self._cpu_facts(facts, existing[0] if existing else None)
        record = HostRecord(
            name=self.config.host,
            address=self.config.address,
            cpus=facts.cpus,
            memory_mib=facts.memory_mib,
            libvirt_version=facts.libvirt_version,
            qemu_version=facts.qemu_version,
            domain_type=self.config.domain_type,
            cpu_models=cpu_models,
            cpu=cpu,
            postcopy=facts.postcopy and self.config.domain_type == "kvm",
            page_encoding=self.config.domain_type == "kvm",
            pools=self._reachable_pools(),
            networks=self._reachable_networks(),
            schedulable=existing[0].schedulable if existing else True,
            agent_port=self.config.agent_port,
            registered_at=self.clock.now(),
        )
        with self._paths_lock:
            rev = self._register(record, lease, facts)
        self.token = rev or 0
        self._learn_peers()  # again at the first pass and then often: hosts register together
        self._report_self_fence()
        self._thaw()
        self._update_cluster_cpu()

    # -- a clean reboot (Proxmox's "freeze") -----------------------------------------------
    def freeze(self, reason: str) -> list[str]:
        """The host is going down cleanly (a reboot): record it (``FrozenHost``, so that HA
        neither fences the host nor recovers its VMs), start nothing more, and ask every
        running kumo guest here to shut down (ACPI). Returns the domains asked. Their VMs
        run here again when the agent registers after the reboot (:meth:`_thaw`)."""
        self.frozen = True
        host = self.config.host
        record = FrozenHost(host=host, reason=reason, since=self.clock.now())
        running = sorted(
            d.name for d in self.hv.domains() if d.kumo_vm and d.state == DomainState.RUNNING
        )
        message = f"{reason}: its VMs are frozen here, not recovered elsewhere" + (
            f"; shutting down {', '.join(running)}" if running else ""
        )
        log.warning("host %s: %s", host, message)
        self.commit(
            self.fence(),
            [],
            [
                put(keys.FROZEN + host, record),
                self._event(self.actor, f"host/{host}", "frozen", message),
            ],
        )
        for name in running:
            try:
                self.hv.shutdown(name)
            except HypervisorError as exc:
                log.error("freeze: %s", exc)
        return running

    def _thaw(self) -> None:
        """Registered again after a clean reboot: the frozen mark goes, and the VMs still
        placed here start again on this host's next passes."""
        host = self.config.host
        found = self.store.get(keys.FROZEN + host)
        if found is None:
            return
        self.commit(
            self.fence(),
            [Compare(keys.FROZEN + host, found.mod_revision)],
            [
                Delete(keys.FROZEN + host),
                self._event(
                    self.actor,
                    f"host/{host}",
                    "thawed",
                    "back after a clean reboot: its VMs run again",
                ),
            ],
        )

    def _register(self, record: HostRecord, lease: int, facts: HostFacts) -> int | None:
        """The registration's commit: the host record, the alive key under the new lease and,
        once the paths were judged, their report again (bound to the new lease, as the alive
        key: the old lease's copy goes with it)."""
        paths: list[Put | Delete] = []
        judged = self.paths.record(self.config.host, self.clock.now())
        if self._paths_written is not None:
            paths = [put(keys.PATHS + self.config.host, judged, lease), *self._path_events]
        rev = self.store.commit(
            [],
            [
                *paths,
                put(keys.HOSTS + self.config.host, record),
                put(keys.ALIVE + self.config.host, record, lease),
                self._event(
                    self.actor,
                    f"host/{self.config.host}",
                    "registered",
                    f"agent up: {facts.cpus} CPUs, {facts.memory_mib} MiB, libvirt "
                    f"{facts.libvirt_version}, QEMU {facts.qemu_version}",
                ),
            ],
        )
        if rev is not None and paths:
            self._paths_written = (judged.model_copy(update={"at": 0.0}), lease)
            self._path_events.clear()
        return rev

    def _cpu_facts(
        self, facts: HostFacts, existing: HostRecord | None
    ) -> tuple[CPUDef | None, tuple[str, ...]]:
        """The CPU and CPU models for the host record. When libvirt could not read them (a
        transient failure), those recorded before stay: erasing them would drop this host
        from the cluster's baseline, and VMs created then might never run here."""
        if facts.host_cpu is not None:
            return facts.host_cpu, facts.cpu_models
        kept = existing.cpu if existing else None
        log.warning(
            "host %s: CPU not read (%s); %s",
            self.config.host,
            facts.cpu_error or "libvirt gave none",
            f"keeping the CPU recorded before ({kept.model})" if kept else "CPU unknown",
        )
        return kept, facts.cpu_models or (existing.cpu_models if existing else ())

    def keepalive(self) -> None:
        try:
            self.keeper.renew()
        except LeaseExpired:
            log.warning("host %s: lease expired; registering again", self.config.host)
            self.register()

    def _reachable_pools(self) -> tuple[str, ...]:
        """Local pools, and the shared pools whose directory here holds the pool's id."""
        pools = load_all(self.store, Pool, keys.POOLS)
        ok = []
        for name, (pool, _) in sorted(pools.items()):
            if pool.kind == "local-dir":
                ok.append(name)
                continue
            check = check_shared_pool(
                self.store, pool, self.pool_ids, self.config.host, self.new_id, self.clock.now()
            )
            if check.available:
                ok.append(name)
            self._pool_problem(name, check.problem)
        return tuple(ok)

    def _pool_problem(self, pool: str, problem: str) -> None:
        """Log and record an event when a pool's problem here appears, changes or clears."""
        if self.mem.pool_problems.get(pool, "") == problem:
            return
        if problem:
            log.warning("host %s: %s", self.config.host, problem)
            self.mem.pool_problems[pool] = problem
        else:
            self.mem.pool_problems.pop(pool, None)
        message = problem or f"pool {pool} verified: its id is in its directory here"
        self.store.commit(
            [],
            [
                self._event(
                    self.actor,
                    f"host/{self.config.host}",
                    "pool-unavailable" if problem else "pool-available",
                    message,
                    self.clock.now(),
                )
            ],
        )

    def _reachable_networks(self) -> tuple[str, ...]:
        nets = load_all(self.store, Network, keys.NETWORKS)
        return tuple(
            name
            for name, (net, _) in sorted(nets.items())
            if self.path_exists(f"/sys/class/net/{net.bridge}")
        )

    # -- network paths (paths.py) ------------------------------------------------------
    def check_paths(self) -> None:
        """One round of the path monitor: ping every target of both paths at once, judge,
        and report a changed judgement (or the first one, or after a new lease) under this
        agent's lease and token, with an event per changed path. The targets and timings are
        read by the reconcile passes (:meth:`run_once`), not here: etcd is reached over the
        storage network, and a round must not wait on it while that is the path that failed.
        Judging goes on while the store is out of reach; the report waits for it."""
        if not self._path_config_read:
            self._read_path_config()  # the first round, before any pass
        targets, notes = self._path_targets, self._path_notes
        every = sorted({t for ts in targets.values() for t in ts})
        try:
            answers = self.probe(every, 0.8 * self.path_interval_s) if every else {}
        except ProbeError as exc:
            if str(exc) != self._probe_error:
                log.error("host %s: paths not judged: %s", self.config.host, exc)
            self._probe_error = str(exc)
            return
        self._probe_error = ""
        now = self.clock.now()
        with self._paths_lock:
            changed = self.paths.feed(
                targets, answers, self._dampening, self.clock.monotonic(), now, notes
            )
            for net in changed:
                status = self.paths.status(net)
                message = describe(net, status, _when(status.since))
                level = logging.WARNING if status.state == PathState.DOWN else logging.INFO
                log.log(level, "host %s: %s", self.config.host, message)
                self._path_events.append(
                    self._event(self.actor, f"host/{self.config.host}", "path", message, now)
                )
            self._report_paths(now)
        if NetPath.STORAGE in changed and self.paths_up(NetPath.STORAGE) is not False:
            self.wake()  # guests paused on I/O errors may be resumed now (decide.py)

    def paths_up(self, net: NetPath) -> bool | None:
        """Whether the path is up as judged now; None: not known (no target, not judged)."""
        state = self.paths.status(net).state
        return None if state == PathState.UNKNOWN else state == PathState.UP

    def _read_path_config(self) -> None:
        """The dampening and the targets, from the HA settings and the host's networks and
        pools; those last read stay when the store is out of reach."""
        host = self.config.host
        try:
            found = load(self.store, HASettings, keys.HA_SETTINGS)
            record = load(self.store, HostRecord, keys.HOSTS + host)
            pools = {n: p for n, (p, _) in load_all(self.store, Pool, keys.POOLS).items()}
            nets = {n: x for n, (x, _) in load_all(self.store, Network, keys.NETWORKS).items()}
        except StoreUnavailable:
            return
        settings = found[0] if found else HASettings()
        self._path_config_read = True
        self._dampening = Dampening.of(settings)
        self.path_interval_s = settings.path_interval_s
        if record is not None:
            wanted = path_targets(record[0].pools, record[0].networks, pools, nets)
            problems = {a: self._route_of(a) for ts in wanted.values() for a in ts}
            kept, notes = screen(wanted, problems)
            for net, note in sorted(notes.items()):
                if self._path_notes.get(net) != note:
                    message = f"{net} path: {note}"
                    log.error("host %s: %s", self.config.host, message)
                    self._path_events.append(
                        self._event(self.actor, f"host/{self.config.host}", "path", message)
                    )
            self._path_targets, self._path_notes = kept, notes

    def _route_of(self, address: str) -> str:
        """``route_problem`` for a ping target, asked again once a minute (routes change)."""
        now = self.clock.monotonic()
        checked = self._routes.get(address)
        if checked is None or now - checked[0] > ROUTE_RECHECK_S:
            checked = (now, self.route_problem(address))
            self._routes[address] = checked
        return checked[1]

    def _report_paths(self, now: float) -> None:
        """Write the judgement when it (or the lease) changed since last written; a store
        out of reach or a lost token leaves it for a later round (a new lease re-puts it)."""
        judged = self.paths.record(self.config.host, now)
        lease = self.lease
        if (judged.model_copy(update={"at": 0.0}), lease) == self._paths_written:
            return
        if not self.keeper.valid or self.keeper.failing:
            return  # no lease to bind it to, or the store out of reach: a later round
        ops: list[Put | Delete] = [put(keys.PATHS + self.config.host, judged, lease)]
        try:
            rev = self.commit(self.fence(), [], [*ops, *self._path_events])
        except (StoreUnavailable, Fenced) as exc:
            log.warning("host %s: paths not reported yet: %s", self.config.host, exc)
            return
        if rev is not None:
            self._paths_written = (judged.model_copy(update={"at": 0.0}), lease)
            self._path_events.clear()

    # -- self-fencing (selffence.py) ----------------------------------------------------
    def guard(self) -> SelfFenced | None:
        """The self-fence check; the daemon runs it every quarter second on its own thread."""
        return self.self_fence.check()

    def _learn_peers(self) -> None:
        """The other hosts' agents and the agent secret, kept for when etcd is out of reach."""
        hosts = load_all(self.store, HostRecord, keys.HOSTS)
        self.peer_addrs = {
            n: (r.address, r.agent_port) for n, (r, _) in hosts.items() if n != self.config.host
        }
        self.self_fence.peers = tuple(sorted(self.peer_addrs))
        secret = self.store.get(keys.AGENT_SECRET)
        if secret is not None:
            self.secret = secret.value.decode()

    def _ask_peer(self, host: str) -> PeerAnswer:
        """Whether ``host``'s agent holds its lease (None: no answer within half a second)."""
        address, port = self.peer_addrs[host]
        code, body = http_call(address, port, self.secret, "GET", "/v1/lease", timeout=0.5)
        return body.strip() == "valid" if code == 200 else None

    def lease_state(self) -> str:
        """What this agent answers a peer: ``valid`` while it surely holds its lease and its
        last renewal reached the store. An agent whose renewals fail says ``lost`` at once,
        though its lease still runs: at the start of an etcd outage the agents' deadlines
        are up to a second apart, and the first to reach its own must hear that the others
        lost the store too (selffence.py)."""
        return "valid" if self.keeper.valid and not self.keeper.failing else "lost"

    def _report_self_fence(self) -> None:
        """Write the events of self-fences done while the store was out of reach."""
        while self.self_fence.done:
            f = self.self_fence.done[0]
            self.commit(
                self.fence(),
                [],
                [
                    self._event(
                        self.actor,
                        f"host/{self.config.host}",
                        "self-fenced",
                        f"destroyed {', '.join(f.domains)} ({f.why}); disks kept",
                        at=f.at,
                    )
                ],
            )
            self.self_fence.done.pop(0)

    def refresh_host(self) -> None:
        """Update the host record when the pools or networks it reaches changed."""
        current = load(self.store, HostRecord, keys.HOSTS + self.config.host)
        if current is None:
            return
        record, rev = current
        pools, nets = self._reachable_pools(), self._reachable_networks()
        if (pools, nets) != (record.pools, record.networks):
            updated = record.model_copy(update={"pools": pools, "networks": nets})
            self.commit(
                self.fence(),
                [Compare(keys.HOSTS + self.config.host, rev)],
                [put(keys.HOSTS + self.config.host, updated)],
            )
        self._update_cluster_cpu()

    def _update_cluster_cpu(self, attempts: int = 3) -> None:
        """Compute the default guest CPU of this host's domain type again when the
        registered hosts of that type or their CPUs changed: libvirt's baseline, through
        this host's libvirtd (ADR 0007). Another agent may write first: then read again
        and, if what it wrote is stale too, compute again (``attempts`` times at most)."""
        dtype = self.config.domain_type
        key = keys.CLUSTER_CPU + dtype
        for _ in range(attempts):
            hosts = {n: r for n, (r, _) in load_all(self.store, HostRecord, keys.HOSTS).items()}
            inputs = baseline_inputs(hosts, dtype)
            current = load(self.store, ClusterCPU, key)
            if not stale(current[0] if current else None, inputs):
                return
            try:
                cpu = self.hv.baseline_cpu([c for _, c in inputs])
            except HypervisorError as exc:
                log.warning(
                    "host %s: %s cluster CPU baseline not updated: %s", self.config.host, dtype, exc
                )
                return
            record = ClusterCPU(
                domain_type=dtype,
                cpu=cpu,
                hosts=tuple(n for n, _ in inputs),
                inputs=digest(inputs),
                computed_by=self.config.host,
                at=self.clock.now(),
            )
            if self._write_baseline(key, current[1] if current else 0, record):
                return
        log.warning(
            "host %s: %s cluster CPU baseline not written: %d compare-and-swaps lost; "
            "the next refresh tries again",
            self.config.host,
            dtype,
            attempts,
        )

    def _write_baseline(self, key: str, rev: int, record: ClusterCPU) -> bool:
        """Write ``record`` if ``key`` is still at ``rev``, with an event; False if not."""
        cpu, names = record.cpu, ", ".join(record.hosts)
        message = (
            f"default guest CPU for new VMs ({record.domain_type}): {cpu.model}, "
            f"{len(cpu.require)} features added, {len(cpu.disable)} removed; runs on {names}"
        )
        event = self._event(self.actor, "cluster/cpu", "baseline", message, self.clock.now())
        return self.store.commit([Compare(key, rev)], [put(key, record), event]) is not None

    # -- a VM arriving with its host-local disk --------------------------------------
    def incoming(self, method: str, vm: str) -> tuple[int, str]:
        """POST: make the disk (and seed) of ``vm`` here, for a migration that copies a
        host-local disk into it. DELETE: remove them again after a failed one, unless the VM
        is placed or defined here."""
        found = load(self.store, VMSpec, keys.VMS + vm)
        if found is None:
            return 404, f"vm {vm} does not exist"
        spec = found[0]
        try:
            pool = self._pool(spec.pool)
            if method == "POST":
                if not self.volumes.exists(pool.path, vm, disk_format(pool)):
                    self._act(Action.CREATE_DISK, spec, pool, self.fence())
                return 200, self.volumes.path(pool.path, vm, disk_format(pool))
            placed = load(self.store, Placement, keys.PLACEMENT + vm)
            if placed is not None and placed[0].host == self.config.host:
                return 409, f"vm {vm} is placed on {self.config.host}: its disk stays"
            if any(d.name == vm for d in self.hv.domains()):
                return 409, f"vm {vm} is defined on {self.config.host}: its disk stays"
            self.volumes.delete(pool.path, vm)
            return 200, f"disk of {vm} removed from {self.config.host}"
        except (HypervisorError, VolumeError, StoreUnavailable, Fenced) as exc:
            return 500, str(exc)

    def wake(self) -> None:
        """Ask the daemon loop for another pass."""
        self.on_wake()

    def forget_status(self, vm: str) -> None:
        """Forget the status last written for ``vm`` (it moved away): the next one is new."""
        self.mem.last_status.pop(vm, None)

    # -- reconcile -------------------------------------------------------------------
    def run_once(self) -> None:
        if not self.keeper.valid:
            return  # no lease: start nothing (the leader may be running our VMs elsewhere)
        if self.frozen:
            return  # going down cleanly: its VMs wait for the host (freeze)
        self._read_path_config()  # for the path monitor's thread (check_paths)
        self._report_self_fence()
        if self.clock.monotonic() - self.peers_read > PEERS_EVERY_S:
            self._learn_peers()
            self.peers_read = self.clock.monotonic()
        if self.store.get(keys.FENCED + self.config.host) is not None:
            self._while_fenced()
            return
        specs = load_all(self.store, VMSpec, keys.VMS)
        placements = load_all(self.store, Placement, keys.PLACEMENT)
        mine = sorted(n for n, (p, _) in placements.items() if p.host == self.config.host)
        migrations = load_all(self.store, Migration, keys.MIGRATIONS)
        for name, (m, _) in migrations.items():
            if m.source == self.config.host and name in mine and m.state == MigrationState.RUNNING:
                self.migrator.start(m, placements[name][1])
        self.migrator.adopt_orphans(migrations, placements)
        # A VM on the move belongs to its migration, not to the reconcile loop: re-creating
        # it here while it switches hosts would run it twice. That includes a VM whose move
        # finished after we read its placement: our snapshot is older than the switch-over.
        migrating, moved = self.migrator.snapshot()
        mine = [
            n
            for n in mine
            if n not in migrations and n not in migrating and placements[n][1] >= moved.get(n, 0)
        ]
        statuses = load_all(self.store, VMStatus, keys.VMSTATUS)
        domains = {d.name: d for d in self.hv.domains()}

        def one(name: str) -> None:
            spec, rev = specs[name]
            status = statuses[name][0] if name in statuses else None
            placed_rev = placements[name][1]
            fence = self.fence(name, placed_rev)
            try:
                try:
                    self._reconcile(spec, rev, domains.get(name), status, fence, placed_rev)
                except StartFailed as exc:
                    self._fail(
                        spec, f"start failed on {self.config.host}: {exc}", fence, placed_rev
                    )
                except (HypervisorError, VolumeError) as exc:
                    self._fail(spec, str(exc), fence)
            except Fenced as exc:
                self.fence().check(self.store)  # our own token gone: the pass ends here
                log.info("vm %s: %s (placed again meanwhile)", name, exc)

        todo = [n for n in mine if n in specs]
        if self.config.threaded and self.config.workers > 1 and len(todo) > 1:
            # each VM's reconcile touches only its own domain, disk and records. Every
            # worker ends before the pass does (a next pass must never work on a VM a worker
            # still starts); then the first error (our own lease lost, etcd away) is raised
            # as the loop below raises it
            futures = [self._workers().submit(one, n) for n in todo]
            wait(futures)
            for fut in futures:
                fut.result()
        else:
            for name in todo:
                one(name)
        self.migrator.sample(
            [n for n in mine if n in domains and domains[n].state == DomainState.RUNNING]
        )
        self._remove_strays(list(domains.values()), specs, placements, migrations)

    def _workers(self) -> ThreadPoolExecutor:
        if self._pool_executor is None:
            self._pool_executor = ThreadPoolExecutor(
                self.config.workers, thread_name_prefix="reconcile"
            )
        return self._pool_executor

    def _while_fenced(self) -> None:
        """This host is fenced (its lease expired, or an operator declared it off): it acts
        dead. Its HA domains are destroyed if any still runs, nothing is started, and the
        domains of VMs now placed elsewhere are removed; the leader unfences the host once
        it has seen its lease again, and VMs still placed here then run again."""
        self.self_fence.fence_now("the host is fenced")
        self._report_self_fence()
        specs = load_all(self.store, VMSpec, keys.VMS)
        placements = load_all(self.store, Placement, keys.PLACEMENT)
        migrations = load_all(self.store, Migration, keys.MIGRATIONS)
        self._remove_strays(self.hv.domains(), specs, placements, migrations)

    def _reconcile(
        self,
        spec: VMSpec,
        rev: int,
        dom: Domain | None,
        status: VMStatus | None,
        fence: Fence,
        placed_rev: int = 0,
    ) -> None:
        """One VM: decide, act, report. ``placed_rev``: the revision of its placement here;
        an HA VM whose start failed under it waits for the leader (decide.py)."""
        name = spec.name
        pool = self._pool(spec.pool)
        if name not in self.mem.reboot_done:
            # First sight (new VM, or after our restart): reboots done are what the last
            # status says; a new VM has none to do.
            self.mem.reboot_done[name] = (
                status.reboot_generation if status is not None else spec.reboot_generation
            )
        io_paused: float | None = None  # when first seen paused on an I/O error
        if dom is not None and dom.paused_reason == PauseReason.IOERROR:
            io_paused = self.mem.io_paused.setdefault(name, self.clock.now())
        else:
            self.mem.io_paused.pop(name, None)
        storage = self.paths.status(NetPath.STORAGE)  # one read: the paths thread replaces it
        seen = Observed(
            domain=dom,
            disk_exists=self.volumes.exists(pool.path, name, disk_format(pool)),
            reboot_done=self.mem.reboot_done[name],
            stop_since=self.mem.stop_since.get(name),
            want_digest=self._want_digest(spec, pool) if dom is not None else None,
            start_held=_start_held(spec, status, self.config.host, placed_rev),
            storage=storage.state,
            storage_since=storage.since,
            io_paused_since=io_paused,
        )
        decision = decide(spec, seen, self.clock.now())
        for action in decision.actions:
            if action == Action.FORGET:
                self._forget(spec, rev, fence)
                return
            try:
                self._act(action, spec, pool, fence)
            except HypervisorError as exc:
                if action == Action.START:
                    raise StartFailed(str(exc)) from exc
                raise
        if decision.message and decision.actions:
            self.commit(
                fence, [], [self._event(self.actor, f"vm/{name}", "notice", decision.message)]
            )
        if spec.power == Power.RUNNING:
            self.mem.stop_since.pop(name, None)
        after = next((d for d in self.hv.domains() if d.name == name), None)
        state = report(spec, after, name in self.mem.stop_since)
        if state == VMState.STOPPED:
            self.mem.stop_since.pop(name, None)
        if seen.start_held and status is not None and state in (VMState.STOPPED, VMState.CRASHED):
            # still the failed start the leader is to answer: the report stays as it was
            self._status(spec, VMState.ERROR, status.message, fence, placed_rev)
            return
        self._status(spec, state, decision.message, fence)
        if spec.task and self._goal_reached(spec, state):
            finish_task(
                self.store,
                spec.task,
                TaskState.SUCCEEDED,
                f"{name}: {state}",
                fence=fence.compares,
                clock=self.clock,
            )

    def _want_digest(self, spec: VMSpec, pool: Pool) -> str | None:
        """The digest of the definition the agent would make now (None: it cannot make one,
        a network is missing; defining would fail and say so)."""
        try:
            return config_digest(self.domain_config(spec, pool))
        except HypervisorError:
            return None

    # -- strays ----------------------------------------------------------------------
    def _remove_strays(
        self,
        domains: list[Domain],
        specs: dict[str, tuple[VMSpec, int]],
        placements: dict[str, tuple[Placement, int]],
        migrations: dict[str, tuple[Migration, int]],
    ) -> None:
        """Stop and undefine each kumo domain here whose VM is placed on another host
        (strays.py), its disk untouched. Judged on this pass's snapshot, then again on fresh
        reads, and claimed by a commit that holds only while the migration record and the
        placement are still as read: a move that ends meanwhile is never taken for a stray."""
        host = self.config.host
        moving, moved = self.migrator.snapshot()
        snapshot = {
            vm: _seen(migrations.get(vm), placements.get(vm), vm in specs)
            for vm in {d.kumo_vm for d in domains if d.kumo_vm}
        }
        by_name = {d.name: d for d in domains}
        found = strays(host, domains, snapshot, frozenset(moving), moved)
        unknown = {s.domain for s in found if s.verdict == Verdict.UNKNOWN}
        for stray in found:
            if stray.verdict == Verdict.UNKNOWN:
                if stray.domain not in self.mem.unknown_domains:
                    log.warning("%s", stray.message(host))  # once, not on every pass
                continue
            try:
                self._remove_stray(stray.vm, by_name[stray.domain])
            except Fenced as exc:
                self.fence().check(self.store)  # our own token gone: the pass ends here
                log.info("vm %s: not a stray after all (%s)", stray.vm, exc)
            except HypervisorError as exc:
                log.error("vm %s: stray domain on %s not removed: %s", stray.vm, host, exc)
        self.mem.unknown_domains = unknown

    def _remove_stray(self, vm: str, dom: Domain) -> None:
        migration = load(self.store, Migration, keys.MIGRATIONS + vm)  # first: see strays.py
        placed = load(self.store, Placement, keys.PLACEMENT + vm)
        fresh = _seen(migration, placed, self.store.get(keys.VMS + vm) is not None)
        moving, moved = self.migrator.snapshot()
        stray = judge(self.config.host, dom, fresh, frozenset(moving), moved)
        if stray is None or stray.verdict != Verdict.STRAY:
            return
        host, done = self.config.host, stray.message(self.config.host)
        claim = f"stray domain of {vm} (placed on {stray.placed_on}) on {host}: removing it"
        claimed = self.commit(
            self.fence(vm, fresh.placement_rev),
            [Compare(keys.MIGRATIONS + vm, migration[1] if migration else 0)],
            [self._event(self.actor, f"vm/{vm}", "stray", claim + " (its disk is kept)")],
        )
        if claimed is None:  # a migration of it began or ended meanwhile: judged next pass
            return
        if stray.running:
            self.hv.destroy(dom.name)
        self.hv.undefine(dom.name)
        log.warning("%s", done)
        self.mem.last_status.pop(vm, None)
        self.commit(self.fence(), [], [self._event(self.actor, f"vm/{vm}", "stray-removed", done)])

    def _goal_reached(self, spec: VMSpec, state: VMState) -> bool:
        want = VMState.RUNNING if spec.power == Power.RUNNING else VMState.STOPPED
        return state == want and self.mem.reboot_done.get(spec.name, 0) >= spec.reboot_generation

    def _pool(self, name: str) -> Pool:
        found = load(self.store, Pool, keys.POOLS + name)
        if found is None:
            raise VolumeError(f"pool {name} is not defined")
        return found[0]

    def _act(self, action: Action, spec: VMSpec, pool: Pool, fence: Fence) -> None:
        name = spec.name
        log.info("vm %s: %s", name, action)
        if action == Action.CREATE_DISK:
            image = load(self.store, Image, keys.IMAGES + spec.image)
            if image is None:
                raise VolumeError(f"image {spec.image} is not defined")
            if image[0].pool != spec.pool:
                raise VolumeError(f"image {spec.image} is in pool {image[0].pool}, not {spec.pool}")
            self.volumes.create(
                pool.path, name, image[0].path, spec.disk_gib, spec.clone, disk_format(pool)
            )
            self.volumes.write_seed(pool.path, name, *nocloud(spec))
        elif action == Action.DEFINE:
            self.hv.define(self.domain_config(spec, pool))
        elif action == Action.START:
            self.hv.start(name)
        elif action == Action.SHUTDOWN:
            self.hv.shutdown(name)
            self.mem.stop_since[name] = self.clock.now()
        elif action == Action.DESTROY:
            self.hv.destroy(name)
        elif action in (Action.REBOOT, Action.RESET):
            (self.hv.reboot if action == Action.REBOOT else self.hv.reset)(name)
            self.mem.reboot_done[name] = spec.reboot_generation
        elif action == Action.RESUME:
            self.hv.resume(name)
            self.mem.io_paused.pop(name, None)  # a new pause is a new one (decide.py)
        elif action == Action.UNDEFINE:
            self.hv.undefine(name)
        elif action == Action.DELETE_DISK:
            self.volumes.delete(pool.path, name)
        self.commit(
            fence,
            [],
            [self._event(self.actor, f"vm/{name}", str(action), f"{action} on {self.config.host}")],
        )

    def domain_config(self, spec: VMSpec, pool: Pool) -> DomainConfig:
        nets = load_all(self.store, Network, keys.NETWORKS)
        nics = []
        for nic in spec.nics:
            if nic.network not in nets:
                raise HypervisorError(f"network {nic.network} is not defined")
            nics.append(NicConfig(bridge=nets[nic.network][0].bridge, mac=nic.mac))
        return DomainConfig(
            name=spec.name,
            uuid=spec.uuid,
            domain_type=self.config.domain_type,
            vcpus=spec.vcpus,
            cpu=cpu_config(spec),
            memory_mib=spec.memory_mib,
            disks=(
                self._disk(spec.name, pool),
                # cloud-init NoCloud seed: hostname, SSH keys
                DiskConfig(
                    self.volumes.seed_path(pool.path, spec.name),
                    format="raw",
                    target="hdc",
                    device="cdrom",
                    bus="ide",
                    readonly=True,
                ),
            ),
            nics=tuple(nics),
            boot=spec.boot,
            serial_log=f"{self.config.serial_log_dir}/{spec.name}-serial.log",
            ha=spec.ha.mode == HAMode.RESTART,
        )

    def _disk(self, vm: str, pool: Pool) -> DiskConfig:
        """The VM's disk: the file in the pool, or, for a pool exported over NBD, the same
        file (raw) opened by QEMU over NBD from the pool's server, exported by its name."""
        fmt = disk_format(pool)
        path = self.volumes.path(pool.path, vm, fmt)
        if pool.nbd is None:
            return DiskConfig(path)
        address, port = nbd_server(pool.nbd)
        return DiskConfig(path, format="raw", nbd=(address, port, os.path.basename(path)))

    def _status(
        self, spec: VMSpec, state: VMState, message: str, fence: Fence, start_failed: int = 0
    ) -> None:
        status = VMStatus(
            name=spec.name,
            host=self.config.host,
            state=state,
            reboot_generation=self.mem.reboot_done.get(spec.name, 0),
            message=message,
            start_failed=start_failed,
            updated_at=self.clock.now(),
        )
        last = self.mem.last_status.get(spec.name)
        if last is not None and last.model_copy(update={"updated_at": 0}) == status.model_copy(
            update={"updated_at": 0}
        ):
            return
        ops: list[Put | Delete] = [put(keys.VMSTATUS + spec.name, status)]
        if last is None or last.state != state:
            ops.append(
                self._event(
                    self.actor,
                    f"vm/{spec.name}",
                    "state",
                    f"{last.state if last else 'unknown'} -> {state}"
                    + (f" ({message})" if message else ""),
                )
            )
        self.commit(fence, [], ops)
        self.mem.last_status[spec.name] = status

    def _fail(self, spec: VMSpec, message: str, fence: Fence, start_failed: int = 0) -> None:
        """Report ``error``; ``start_failed``: the placement revision of a failed start."""
        log.error("vm %s: %s", spec.name, message)
        self._status(spec, VMState.ERROR, message, fence, start_failed)
        if spec.task:
            finish_task(
                self.store,
                spec.task,
                TaskState.FAILED,
                message,
                fence=fence.compares,
                clock=self.clock,
            )

    def _forget(self, spec: VMSpec, rev: int, fence: Fence) -> None:
        name = spec.name
        ok = self.commit(
            fence,
            [Compare(keys.VMS + name, rev)],
            [
                Delete(keys.VMS + name),
                Delete(keys.PLACEMENT + name),
                Delete(keys.VMSTATUS + name),
                *(Delete(keys.MACS + nic.mac) for nic in spec.nics),  # free for other VMs
                self._event(
                    self.actor,
                    f"vm/{name}",
                    "deleted",
                    f"domain and disk removed from {self.config.host}",
                ),
            ],
        )
        if ok and spec.task:
            # the placement is gone with the VM: the agent's own token fences this one
            finish_task(
                self.store,
                spec.task,
                TaskState.SUCCEEDED,
                f"{name} deleted",
                fence=self.fence().compares,
                clock=self.clock,
            )
        for m in (self.mem.stop_since, self.mem.reboot_done, self.mem.last_status):
            m.pop(name, None)
        self.mem.io_paused.pop(name, None)


class StartFailed(HypervisorError):
    """libvirt refused to start the domain (reported with the placement it happened under)."""


def _start_held(spec: VMSpec, status: VMStatus | None, host: str, placed_rev: int) -> bool:
    """Whether the VM is an HA VM whose start here failed under its current placement: the
    agent does not try again by itself; the leader places it again to have it retried."""
    return (
        spec.ha.mode == HAMode.RESTART
        and spec.power == Power.RUNNING
        and placed_rev > 0
        and status is not None
        and status.host == host
        and status.state == VMState.ERROR
        and status.start_failed == placed_rev
    )


def _when(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + " UTC"


def _seen(
    migration: tuple[Migration, int] | None, placed: tuple[Placement, int] | None, exists: bool
) -> Seen:
    """What strays.py needs to know of a VM, from its records."""
    return Seen(
        placed_on=placed[0].host if placed else None,
        placement_rev=placed[1] if placed else 0,
        migration=(migration[0].source, migration[0].target) if migration else None,
        exists=exists,
    )


def cpu_config(spec: VMSpec) -> CPUConfig:
    """The guest CPU for the domain: the VM's named model, or the cluster baseline fixed in
    its spec at creation, or host-model when none was known then (ADR 0007)."""
    if spec.cpu_model != CLUSTER_DEFAULT:
        return CPUConfig(model=spec.cpu_model)
    if spec.cpu is None:
        return CPUConfig()
    return CPUConfig(model=spec.cpu.model, require=spec.cpu.require, disable=spec.cpu.disable)


class AgentDaemon:
    """The agent's threads: keep-alive, etcd watch, libvirt events, and the reconcile loop."""

    def __init__(self, agent: Agent, resync_s: float = 5.0) -> None:
        self.agent = agent
        self.resync_s = resync_s
        self.wake = threading.Event()
        self.stop = threading.Event()

    def _keepalive_loop(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.agent.keepalive()
            except StoreUnavailable as exc:
                log.warning("keep-alive failed: %s (VMs are left running)", exc)
            except HypervisorError as exc:
                log.warning("cannot register again: %s", exc)

    def _fence_loop(self) -> None:
        """Self-fencing, on its own thread: a reconcile pass stuck on the store or libvirt
        must not delay it (selffence.py)."""
        while not self.stop.wait(0.25):
            try:
                self.agent.guard()
                watchdog.feed()
            except Exception:
                log.exception("self-fence check failed")

    def _paths_loop(self) -> None:
        """The path monitor, a round every ``path_interval_s`` (paths.py)."""
        clock = self.agent.clock
        while not self.stop.is_set():
            began = clock.monotonic()
            try:
                self.agent.check_paths()
            except Exception:
                log.exception("network path check failed")
            self.stop.wait(max(0.0, self.agent.path_interval_s - (clock.monotonic() - began)))

    def _watch_loop(self) -> None:
        while not self.stop.is_set():
            try:
                start = self.agent.store.revision() + 1
                watch = self.agent.store.watch(keys.ROOT, start)
                for ev in watch:
                    if ev.key.startswith((keys.VMS, keys.PLACEMENT, keys.MIGRATIONS)):
                        self.wake.set()
                    if self.stop.is_set():
                        watch.cancel()
                        return
            except StoreUnavailable as exc:
                log.warning("watch: %s; retrying", exc)
                self.stop.wait(1.0)
            self.wake.set()  # anything may have changed while we were not watching

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.agent.register()
                break
            except StoreUnavailable as exc:
                log.warning("cannot register: %s; retrying", exc)
                self.stop.wait(1.0)
        self.agent.hv.on_change(lambda _name: self.wake.set())
        self.agent.on_wake = self.wake.set
        loops = (self._keepalive_loop, self._watch_loop, self._fence_loop, self._paths_loop)
        for target in loops:
            threading.Thread(target=target, daemon=True, name=target.__name__).start()
        last_refresh = 0.0
        while not self.stop.is_set():
            try:
                if self.agent.clock.monotonic() - last_refresh > 30:
                    self.agent.refresh_host()
                    last_refresh = self.agent.clock.monotonic()
                self.agent.run_once()
            except StoreUnavailable as exc:
                log.warning("%s; VMs are left as they are", exc)
            except Fenced as exc:
                log.warning("%s; VMs are left as they are until registered again", exc)
            except HypervisorError as exc:
                log.error("%s", exc)
            self.wake.wait(self.resync_s)
            self.wake.clear()
