"""The deterministic simulator: a whole cluster in one thread, on a virtual clock.

A ``World`` owns simulated hosts (a :class:`FakeHypervisor` in a shared :class:`FakeFabric`
and a **real** :class:`kumo.agent.agent.Agent`), a :class:`MemoryStore` whose leases run on
the :class:`VirtualClock`, and server replicas (a real :class:`LeaderElector`,
``ClusterService`` and ``Controllers``, assembled as ``kumo server`` assembles them). Nothing
runs unless ``step`` runs it, always in the same order:

1. the clock moves on by ``dt``;
2. each live replica, by name: ``elector.step()`` when it leads or the leader key is free (as
   ``run_elected``), and ``controllers.run_once()`` while it leads;
3. each host, by name, whose agent is alive, powered and not paused: ``register()`` until
   registered, then ``keepalive()`` and ``run_once()`` (the daemon's threads, one turn each),
   and ``refresh_host()`` every 30 s, catching what ``AgentDaemon`` catches;
4. the world looks: each host's guests (what QEMU runs, libvirtd up or not) and each event
   committed, into the log; then the invariants (kumo.sim.invariants).

Agent-to-agent HTTP (the link probe, a copied disk's ``incoming``) is a direct call, through
the storage link. Time, ids and random bits come from the clock, one ``CountedIds`` and one
seeded ``random.Random``: the same seed and the same faults give the same log, byte for byte
(tests/unit/test_sim_world.py). ``apply`` takes a :class:`kumo.faults.Fault`; every fault of
the vocabulary is simulated (a command the service refuses raises its error).
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kumo import faults as f
from kumo.agent.agent import Agent, AgentConfig
from kumo.agent.watchdog import TIMEOUT_S as WATCHDOG_TIMEOUT_S
from kumo.clock import CountedIds
from kumo.hypervisor.base import DomainState, HypervisorError
from kumo.hypervisor.fake import FakeFabric, FakeHypervisor
from kumo.model.activity import Event
from kumo.model.ha import HAMode
from kumo.model.host import HostRecord
from kumo.server.controllers import Controllers
from kumo.server.leader import LeaderElector
from kumo.server.service import ClusterService
from kumo.sim.clock import VirtualClock
from kumo.sim.cluster import NAS, ROUTER, define_basics
from kumo.sim.invariants import InvariantViolated, Violation, check
from kumo.sim.store import Audit, Reach, Writer
from kumo.storage.pool_identity import FakePoolIds
from kumo.storage.volumes import FakeVolumes, Volumes
from kumo.store import keys
from kumo.store.base import ClusterStore, Compare, Put, StoreUnavailable
from kumo.store.lease import Fenced
from kumo.store.liveness import alive_hosts
from kumo.store.memory import MemoryStore
from kumo.store.records import put

REFRESH_S = 30.0  # the agent daemon's host refresh period


REBOOT_S = 20.0  # a simulated host's clean reboot: off this long, then powered on


class SimHypervisor(FakeHypervisor):
    """A fake hypervisor that tells the world of every start that succeeded (a boot): a
    crash and the restart that follows may fall within one tick, where sampling the guests
    would not see them."""

    def __init__(
        self,
        name: str,
        cpus: int,
        memory_mib: int,
        fabric: FakeFabric,
        booted: Callable[[str, str], None],
    ) -> None:
        super().__init__(name, cpus, memory_mib, fabric=fabric)
        self.booted = booted

    def start(self, name: str) -> None:
        super().start(name)
        self.booted(self.hostname, name)


@dataclass
class Links:
    """A host's network paths, as the fault actions set them."""

    public: bool = True
    storage: bool = True
    control: bool = True  # reaches the store (etcd); `partition` cuts only this
    mbit: dict[str, float] = field(default_factory=dict)  # net -> rate, when slowed


@dataclass
class SimHost:
    name: str
    hv: FakeHypervisor
    store: Reach
    volumes: Volumes
    agent: Agent | None = None  # None: the agent process is dead
    registered: bool = False
    powered: bool = True
    paused: bool = False
    links: Links = field(default_factory=Links)
    last_refresh: float = 0.0
    last_paths: float = float("-inf")  # when its agent last pinged (a round per interval)
    boot_at: float | None = None  # rebooting: when it is powered on again (monotonic)
    guests: dict[str, DomainState] = field(default_factory=dict)  # as last logged
    fed: float | None = None  # when its agent last fed the watchdog (None: not armed)


@dataclass
class Replica:
    name: str
    elector: LeaderElector
    service: ClusterService
    controllers: Controllers
    alive: bool = True


class World:
    """A simulated cluster. ``hosts``: names, or (name, cpus, memory_mib); ``replicas``:
    server replicas running controllers (0: none, a test drives the service itself)."""

    def __init__(
        self,
        hosts: Sequence[str | tuple[str, int, int]] = ("h1", "h2", "h3"),
        *,
        replicas: int = 1,
        seed: int = 0,
        start: float = 0.0,
        store: Callable[[Callable[[], float]], MemoryStore] = MemoryStore,
        volumes: Volumes | None = None,
        threaded_migrations: bool = False,
        domain_type: Literal["kvm", "qemu"] = "qemu",
        strict: bool = True,
    ) -> None:
        self.clock = VirtualClock(start)
        self.ids = CountedIds("s")  # one source for every writer: one total order of events
        self.rng = random.Random(seed)
        self.store = store(self.clock.monotonic)
        self.audit = Audit()
        self.fabric = FakeFabric()
        self.fabric.connected = lambda a, b: self._storage_path(a, b)
        self.store_up = True
        self.router_up = True  # the public network's router, for every host
        self.nas_up = True  # the shared pool's NAS, for every host
        self.strict = strict  # raise on the first invariant violation (else only record)
        self.violations: list[Violation] = []
        self.log: list[str] = []
        self.origin = 0.0  # the log's and the violations' t=0, on the clock
        self.boots: list[tuple[float, str, str]] = []  # (t, host, vm): each start that worked
        self._leader: str | None = None  # as last logged
        self._alive: tuple[str, ...] = ()
        self.pool_ids = FakePoolIds()  # one shared directory, seen by every host
        self.volumes = volumes if volumes is not None else FakeVolumes()
        self.threaded = threaded_migrations
        self.domain_type: Literal["kvm", "qemu"] = domain_type
        # the operator (and API commands): unfenced, always reaching the store
        self.service = self._service(self._reach(Writer("operator"), lambda: True))
        define_basics(self.service)
        self.store.commit([], [Put(keys.AGENT_SECRET, b"secret")])
        self.hosts: dict[str, SimHost] = {}
        for spec in hosts:
            name, cpus, memory = (spec, 8, 16384) if isinstance(spec, str) else spec
            self.add_host(name, cpus, memory)
        self.replicas = [self._replica(f"s{i + 1}") for i in range(replicas)]
        self._observe()

    # -- assembly ----------------------------------------------------------------------
    def _service(self, store: ClusterStore) -> ClusterService:
        """A service as `kumo server` makes one, on the world's clock, ids and random bits."""
        return ClusterService(
            store,
            clock=self.clock,
            ids=self.ids,
            mac_bits=lambda: self.rng.getrandbits(24),
            new_uuid=lambda: str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
        )

    def _reach(self, writer: Writer, path: Callable[[], bool]) -> Reach:
        return Reach(self.store, writer, lambda: self.store_up and path(), self.audit)

    def _replica(self, name: str) -> Replica:
        writer = Writer(f"leader {name}", keys.LEADER)
        reach = self._reach(writer, lambda: True)
        elector = LeaderElector(reach, name, clock=self.clock)
        writer.token = lambda: elector.token
        service = self._service(reach)
        return Replica(name, elector, service, Controllers(service, fence=elector.fence))

    def add_host(self, name: str, cpus: int = 8, memory_mib: int = 16384) -> SimHost:
        """A host, powered on, its agent registered at once (as a host that was up)."""
        writer = Writer(f"agent {name}", keys.ALIVE + name, exempt=(keys.EVENTS, keys.POOL_IDS))
        host = SimHost(
            name,
            SimHypervisor(name, cpus, memory_mib, self.fabric, self._booted),
            self._reach(writer, lambda: self._reaches_store(name)),
            self.volumes,
        )
        writer.token = lambda: host.agent.token if host.agent else 0
        self.hosts[name] = host
        self.start_agent(name)
        self._register(host)
        return host

    def new_agent(self, host: SimHost) -> Agent:
        """A real agent for ``host``: the world's clock and ids, agent-to-agent calls direct."""
        n = int("".join(c for c in host.name if c.isdigit()) or "0")
        config = AgentConfig(
            host.name,
            f"198.18.1.{10 + n}",
            self.domain_type,
            libvirt_uri="fake+tcp://{host}/system",
            threaded=self.threaded,
        )
        agent = Agent(
            config,
            host.store,
            host.hv,
            host.volumes,
            clock=self.clock,
            path_exists=lambda p: True,
            pool_ids=self.pool_ids,
            new_id=lambda: f"{self.rng.getrandbits(128):032x}",
            ids=self.ids,
        )
        agent.migrator.probe = lambda addr, port, secret, s: self._probe(host.name, addr)
        agent.migrator.incoming = lambda rec, secret, method, vm: self._incoming(
            host.name, rec, method, vm
        )
        agent.self_fence.ask_peer = lambda peer: self._ask_peer(host.name, peer)
        agent.probe = lambda addrs, _timeout: {a: self._answers(host.name, a) for a in addrs}
        return agent

    def _answers(self, source: str, address: str) -> bool:
        """Whether ``address`` answers a ping from ``source``: the router over the public
        link, the NAS over the storage link."""
        host = self.hosts[source]
        if not host.powered:
            return False
        if address == ROUTER:
            return self.router_up and host.links.public
        if address == NAS:
            return self.nas_up and host.links.storage
        return False

    def _ask_peer(self, source: str, peer: str) -> bool | None:
        """A peer agent's answer to ``/v1/lease`` over the cluster network (None: no answer)."""
        target = self.hosts.get(peer)
        if target is None or target.agent is None or target.paused:
            return None
        if not self._storage_path(source, peer):
            return None
        return target.agent.lease_state() == "valid"

    def start_agent(self, name: str) -> None:
        host = self.hosts[name]
        host.agent, host.registered, host.paused = self.new_agent(host), False, False

    def _booted(self, host: str, vm: str) -> None:
        self.boots.append((self.t(), host, vm))
        self.note(f"{host} {vm}: booted")  # seen even when it crashes again within the tick

    # -- paths -------------------------------------------------------------------------
    def _reaches_store(self, name: str) -> bool:
        host = self.hosts[name]
        return host.powered and host.links.control

    def _storage_path(self, a: str, b: str) -> bool:
        ha, hb = self.hosts.get(a), self.hosts.get(b)
        return bool(
            ha and hb and ha.powered and hb.powered and ha.links.storage and hb.links.storage
        )

    def _probe(self, source: str, address: str) -> float | None:
        """The link probe: the storage path's rate in MiB/s (1 Gbit/s unless slowed)."""
        target = next(
            (h for h in self.hosts.values() if h.agent and h.agent.config.address == address), None
        )
        if target is None or not self._storage_path(source, target.name):
            return None
        mbit = min(
            self.hosts[source].links.mbit.get("storage", 1000.0),
            target.links.mbit.get("storage", 1000.0),
        )
        return mbit / 8 / 1.048576

    def _incoming(self, source: str, rec: HostRecord, method: str, vm: str) -> tuple[int, str]:
        target = self.hosts.get(rec.name)
        if (
            target is None
            or target.agent is None
            or target.paused
            or not self._storage_path(source, rec.name)
        ):
            return 0, f"agent on {rec.name} unreachable (simulated)"
        return target.agent.incoming(method, vm)

    # -- time --------------------------------------------------------------------------
    def step(self, dt: float = 1.0) -> None:
        """One tick: the clock, the replicas, the agents, then look (see the module doc)."""
        self.clock.advance(dt)
        for host in self.hosts.values():
            if host.boot_at is not None and self.clock.monotonic() >= host.boot_at - 1e-9:
                host.boot_at = None
                self.note(f"{host.name}: powered on after its reboot")
                self._apply(f.PowerOn(host.name))
        for replica in self.replicas:
            self._step_replica(replica)
        for name in sorted(self.hosts):
            self._step_host(self.hosts[name])
        self._observe()

    def run(self, seconds: float, tick: float = 1.0) -> None:
        """``seconds`` of virtual time in ticks of ``tick`` (agents renew once a tick, as
        their daemon does every second: keep ``tick`` at most 1)."""
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() + tick <= end + 1e-9:
            self.step(tick)

    def _step_replica(self, r: Replica) -> None:
        if not r.alive:
            return
        try:
            if not (r.elector.lease or r.elector.store.get(keys.LEADER) is None):
                return
        except StoreUnavailable:
            return
        leading = r.elector.step()
        if not leading:
            return
        try:
            r.controllers.run_once()
        except StoreUnavailable:
            pass
        except Fenced as exc:
            r.elector.step_down(str(exc))

    def _step_host(self, host: SimHost) -> None:
        agent = host.agent
        if not host.powered:
            host.fed = None  # the watchdog died with the host
            return
        if not (self.nas_up and host.links.storage):
            host.hv.storage_lost()  # a guest resumed while its disks are away pauses again
        if agent is None or host.paused:
            self._watchdog(host)
            return
        host.fed = self.clock.monotonic()  # the agent's self-fence loop feeds it
        try:
            if not host.registered:
                self._register(host)
                if not host.registered:
                    agent.guard()  # its own thread in the daemon: needs no store
                    return
            try:
                agent.keepalive()
            finally:
                agent.guard()
            if self.clock.monotonic() - host.last_paths >= agent.path_interval_s - 1e-9:
                host.last_paths = self.clock.monotonic()
                agent.check_paths()  # its own thread in the daemon, once an interval
            if self.clock.monotonic() - host.last_refresh > REFRESH_S:
                agent.refresh_host()
                host.last_refresh = self.clock.monotonic()
            agent.run_once()
        except (StoreUnavailable, Fenced, HypervisorError):
            pass  # as AgentDaemon: logged there, VMs left as they are

    def _watchdog(self, host: SimHost) -> None:
        """The host's watchdog process (``kumo watchdog``): its agent stopped feeding it, so
        it cannot self-fence; past the timeout the watchdog kills the HA guests itself."""
        if host.fed is None or self.clock.monotonic() - host.fed <= WATCHDOG_TIMEOUT_S:
            return
        killed = host.hv.kill_ha()
        if killed:
            self.note(f"{host.name} watchdog: agent silent; killed {', '.join(killed)}")

    def _register(self, host: SimHost) -> None:
        assert host.agent is not None
        try:
            host.agent.register()
        except (StoreUnavailable, HypervisorError):
            return
        host.registered = True
        host.last_refresh = self.clock.monotonic()

    # -- looking -----------------------------------------------------------------------
    def t(self) -> float:
        """Virtual seconds since ``origin`` (a scenario's t=0: its setup done)."""
        return self.clock.monotonic() - self.origin

    def note(self, what: str) -> None:
        self.log.append(f"t={self.t():.3f} {what}")

    def _observe(self) -> None:
        """Log what changed this tick (events written, then each host's guests, then who
        leads and which hosts are alive), then check the invariants."""
        t = self.t()
        self._log_commits()
        for name in sorted(self.hosts):
            host = self.hosts[name]
            now = host.hv.guests()
            for vm in sorted(set(now) | set(host.guests)):
                before, after = host.guests.get(vm), now.get(vm)
                if before != after:
                    self.note(f"{name} {vm}: {before or 'none'} -> {after or 'none'}")
            host.guests = now
        if self.store_up:  # the world's own look; never while the store is down
            leader = self.leader()
            if leader != self._leader:
                self.note(f"leader: {leader or 'none'}")
                self._leader = leader
            alive = tuple(sorted(alive_hosts(self.store)))
            if alive != self._alive:
                self.note(f"alive: {' '.join(alive) or 'none'}")
                self._alive = alive
        for v in check(t, {n: h.hv.guests() for n, h in self.hosts.items()}):
            self._violated(v)

    def _log_commits(self) -> None:
        """The events committed since the last look; a commit from a fenced writer."""
        for commit in self.audit.take():
            for op in commit.ops:
                if isinstance(op, Put) and op.key.startswith(keys.EVENTS):
                    e = Event.model_validate_json(op.value)
                    self.note(f"event {e.object} {e.action}: {e.message} ({e.actor})")
            if commit.stale:
                keys_written = ", ".join(o.key for o in commit.ops)
                detail = f"{commit.writer} wrote {keys_written} at revision {commit.revision}"
                self._violated(Violation("fenced-writer", self.t(), f"{detail}: {commit.stale}"))

    def _violated(self, v: Violation) -> None:
        self.violations.append(v)
        self.note(f"VIOLATION {v}")
        if self.strict:
            raise InvariantViolated(v)

    def leader(self) -> str | None:
        entry = self.store.get(keys.LEADER)
        return entry.value.decode() if entry else None

    def agents(self) -> dict[str, Agent]:
        return {n: h.agent for n, h in sorted(self.hosts.items()) if h.agent is not None}

    def running_on(self, vm: str) -> list[str]:
        """The hosts where ``vm``'s domain runs (ground truth, whatever libvirtd says)."""
        return [
            n for n, h in sorted(self.hosts.items()) if h.hv.guests().get(vm) == DomainState.RUNNING
        ]

    # -- faults ------------------------------------------------------------------------
    def apply(self, fault: f.Fault) -> None:
        """Apply ``fault`` now (logged)."""
        self.note(f"fault: {f.describe(fault)}")
        self._apply(fault)
        self._log_commits()  # what the fault wrote (an operator's command), at its time

    def _apply(self, fault: f.Fault) -> None:
        match fault:
            case f.PowerOff(h):
                host = self.hosts[h]
                host.hv.power_off()
                host.powered, host.agent, host.registered = False, None, False
            case f.PowerOn(h):
                host = self.hosts[h]
                host.hv.power_on()
                host.powered = True
                self.start_agent(h)  # the agent starts at boot; it registers next tick
            case f.KillAgent(h):
                self.hosts[h].agent, self.hosts[h].registered = None, False
            case f.RestartAgent(h):
                self.start_agent(h)
            case f.KillLibvirtd(h):
                self.hosts[h].hv.up = False  # QEMU goes on
            case f.RestartLibvirtd(h):
                self.hosts[h].hv.up = self.hosts[h].powered
            case f.Partition(h):
                self.hosts[h].links.control = False
            case f.Heal(h):
                self.hosts[h].links = Links()
            case f.Link(h, net, up):
                setattr(self.hosts[h].links, net, up)
                if net == "storage" and not up:
                    self.hosts[h].hv.storage_lost()  # its disks are on the NAS
            case f.Router(up):
                self.router_up = up
            case f.Nas(up):
                self.nas_up = up
                if not up:
                    for host in self.hosts.values():
                        if host.powered:
                            host.hv.storage_lost()
            case f.Slow(h, net, mbit):
                self.hosts[h].links.mbit[net] = mbit
            case f.PauseAgent(h):
                self.hosts[h].paused = True
            case f.ResumeAgent(h):
                self.hosts[h].paused = False
            case f.VmCrash(vm):
                self._crash(vm)
            case f.StartFails(vm, h, times):
                self.hosts[h].hv.start_failures[vm] = times
            case f.MigrateFails(vm):
                for h in self.running_on(vm):
                    self.hosts[h].hv.migration_failures.add(vm)
            case f.LeaderCrash():
                for r in self.replicas:
                    if r.alive and r.elector.is_leader:
                        r.alive = False  # dies: no resign, its lease runs out
            case f.StoreDown():
                self.store_up = False
            case f.StoreUp():
                self.store_up = True
                self.store.extend_leases()  # as etcd's new leader does
            case f.Maintenance(h, enter):
                self.service.migrations.maintenance(h, "enter" if enter else "exit", True, "sim")
            case f.VmMigrate(vm, target):
                self.service.migrations.migrate(vm, target, "sim")
            case f.VmPower(vm, action):
                if action == "delete":
                    self.service.delete(vm, "sim")
                else:
                    self.service.power(vm, action, False, "sim")
            case f.Fence(h):
                self.service.commands.fence_host(h, "sim", force=True)  # trusted (SCENARIOS.md)
            case f.VmHa(vm, mode):
                self._set_ha(vm, mode)
            case f.Reboot(h):
                # systemd stops the agent for a reboot: it freezes (agent/shutdown.py), the
                # guests shut down, the host goes off and comes back REBOOT_S later
                host = self.hosts[h]
                if host.agent is not None and host.registered:
                    # a freeze that cannot be written: the host reboots all the same
                    with contextlib.suppress(StoreUnavailable, Fenced, HypervisorError):
                        host.agent.freeze("clean reboot of the host")
                host.hv.power_off()
                host.powered, host.agent, host.registered = False, None, False
                host.boot_at = self.clock.monotonic() + REBOOT_S

    def _set_ha(self, vm: str, mode: str) -> None:
        """``vm ha VM restart|off``: the VM's HA mode changed as the API's command changes it
        (the spec, under a compare, with an ``ha-policy`` event)."""
        st = self.service.state
        spec, rev = st.spec(vm)
        ha = spec.ha.model_copy(update={"mode": HAMode(mode)})
        event = st.event("sim", f"vm/{vm}", "ha-policy", ha.model_dump_json())
        updated = spec.model_copy(update={"ha": ha})
        st.commit([Compare(keys.VMS + vm, rev)], [put(keys.VMS + vm, updated), event])

    def _crash(self, vm: str) -> None:
        for h in self.running_on(vm):
            self.hosts[h].hv.crash(vm)  # QEMU dies whether or not libvirtd answers
