"""The agent against the in-memory store, the fake hypervisor and fake volumes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from kumo.agent.agent import Agent
from kumo.hypervisor.base import DomainState
from kumo.hypervisor.domain import DomainConfig, config_digest
from kumo.model.activity import Event, Task, TaskState
from kumo.model.host import HostPaths, HostRecord, Image, NetPath, PathState, Pool
from kumo.model.vm import Migration, MigrationState, Placement, Power, VMSpec, VMState, VMStatus
from kumo.sim.cluster import NAS, ROUTER, vm_spec
from kumo.sim.world import World as World_
from kumo.storage.volumes import FakeVolumes
from kumo.store import keys
from kumo.store.activity import new_task
from kumo.store.base import Delete, Entry
from kumo.store.memory import MemoryStore
from kumo.store.records import decode, load, put


class World:
    """One host of a simulated world (kumo.sim.World) at t=1000, no controllers: the tests
    write records as the server would and call the agent's pass themselves."""

    def __init__(self, acpi: bool = True, store: type[MemoryStore] = MemoryStore) -> None:
        self.vols = FakeVolumes({"images/tg.qcow2"})
        self.world = World_(("h1",), replicas=0, start=1000.0, store=store, volumes=self.vols)
        self.clock, self.store, self.ids = self.world.clock, self.world.store, self.world.ids
        self.host = self.world.hosts["h1"]
        self.hv = self.host.hv
        self.hv.acpi = acpi
        self.store.commit(
            [],
            [
                put(
                    keys.IMAGES + "tg",
                    Image(
                        name="tg", pool="shared", path="images/tg.qcow2", size_gib=1, created_at=0
                    ),
                ),
            ],
        )
        assert self.host.agent is not None
        self.agent = self.host.agent
        self.svc = self.world.service

    @property
    def now(self) -> float:
        return self.clock.now()

    @now.setter
    def now(self, value: float) -> None:
        """``w.now += s``: let ``s`` seconds pass, with no keep-alive."""
        self.clock.advance(value - self.clock.now())

    def new_agent(self) -> Agent:
        """Another agent process for h1 (a restart), not yet registered."""
        return self.world.new_agent(self.host)

    def wait(self, seconds: int) -> None:
        """Let ``seconds`` pass, the agent renewing its lease every second as its daemon does."""
        for _ in range(seconds):
            self.now += 1
            self.agent.keepalive()

    def spec(self, name: str = "web1", **kw: object) -> VMSpec:
        return vm_spec(name, **{"image": "tg", **kw})

    def submit(self, spec: VMSpec, kind: str = "vm.create") -> str:
        task = new_task(kind, f"vm/{spec.name}", "test")
        spec = spec.model_copy(update={"task": task.id})
        self.store.commit(
            [],
            [
                put(keys.VMS + spec.name, spec),
                put(keys.TASKS + task.id, task),
                put(keys.PLACEMENT + spec.name, Placement(host="h1", at=0)),
            ],
        )
        return task.id

    def status(self, name: str = "web1") -> VMStatus:
        found = load(self.store, VMStatus, keys.VMSTATUS + name)
        assert found is not None
        return found[0]

    def task(self, tid: str) -> Task:
        found = load(self.store, Task, keys.TASKS + tid)
        assert found is not None
        return found[0]

    def power(self, action: str, force: bool = False) -> str:
        """`kumo vm ACTION web1 [--force]`, through the service as the API calls it."""
        return self.svc.power("web1", action, force, "test").id

    def states(self) -> list[DomainState]:
        return [d.state for d in self.hv.domains()]

    def events(self, action: str) -> list[Event]:
        evs = [decode(Event, e) for e in self.store.range(keys.EVENTS)]
        return [e for e in evs if e.action == action]


def test_registers_host_under_a_lease() -> None:
    w = World()
    host = load(w.store, HostRecord, keys.HOSTS + "h1")
    assert host is not None and host[0].pools == ("shared",) and host[0].networks == ("public",)
    alive = w.store.get(keys.ALIVE + "h1")
    assert alive is not None and decode(HostRecord, alive) == host[0]  # as store/keys.py says
    assert w.agent.token == alive.mod_revision  # the agent's fencing token
    w.now += 10  # no keep-alive: the lease expires, the host is no longer alive
    assert w.store.get(keys.ALIVE + "h1") is None
    w.agent.keepalive()  # registers again
    assert w.store.get(keys.ALIVE + "h1") is not None


def test_create_start_stop_reboot_delete() -> None:
    w = World()
    tid = w.submit(w.spec())
    w.agent.run_once()
    assert w.vols.exists("/pool", "web1")
    meta, user = w.vols.seeds["/pool/vms/web1-seed.iso"]
    assert "local-hostname: web1" in meta and "hostname: web1" in user
    assert [d.state for d in w.hv.domains()] == [DomainState.RUNNING]
    assert w.status().state == VMState.RUNNING and w.task(tid).state == TaskState.SUCCEEDED

    stop = w.submit(w.spec(power=Power.STOPPED), "vm.stop")
    w.agent.run_once()
    assert w.status().state == VMState.STOPPED and w.task(stop).state == TaskState.SUCCEEDED

    w.submit(w.spec(), "vm.start")
    w.agent.run_once()
    boots = w.hv.boots("web1")
    reboot = w.submit(w.spec(reboot_generation=1), "vm.reboot")
    w.agent.run_once()
    assert w.hv.boots("web1") == boots + 1 and w.task(reboot).state == TaskState.SUCCEEDED
    w.agent.run_once()
    assert w.hv.boots("web1") == boots + 1  # done once, not every pass

    delete = w.submit(w.spec(reboot_generation=1, deleting=True), "vm.delete")
    w.agent.run_once()
    assert w.hv.domains() == [] and not w.vols.exists("/pool", "web1") and not w.vols.seeds
    assert w.store.range(keys.VMS) == [] and w.store.range(keys.PLACEMENT) == []
    assert w.task(delete).state == TaskState.SUCCEEDED


def test_guest_ignoring_acpi_is_forced_off_after_timeout() -> None:
    w = World(acpi=False)
    w.submit(w.spec(stop_timeout_s=30))
    w.agent.run_once()
    w.submit(w.spec(stop_timeout_s=30, power=Power.STOPPED), "vm.stop")
    w.agent.run_once()
    assert w.status().state == VMState.STOPPING
    w.wait(29)
    w.agent.run_once()
    assert w.status().state == VMState.STOPPING
    w.wait(2)
    w.agent.run_once()
    assert w.status().state == VMState.STOPPED
    assert "forced off" in w.status().message


def test_restarted_agent_adopts_running_domains_untouched() -> None:
    w = World()
    w.submit(w.spec(reboot_generation=3))
    w.agent.run_once()
    boots = w.hv.boots("web1")
    w.agent = w.new_agent()  # a new process: no memory
    w.agent.register()
    w.agent.run_once()
    w.agent.run_once()
    assert w.hv.boots("web1") == boots
    assert w.status().state == VMState.RUNNING


def test_errors_are_reported_on_the_vm_and_its_task() -> None:
    w = World()
    tid = w.submit(w.spec(image="tg", pool="shared").model_copy(update={"image": "missing"}))
    w.agent.run_once()
    assert w.status().state == VMState.ERROR
    assert "image missing is not defined" in w.status().message
    assert w.task(tid).state == TaskState.FAILED


@pytest.mark.parametrize("other", ["h2"])
def test_vms_placed_elsewhere_are_not_touched(other: str) -> None:
    w = World()
    spec = w.spec()
    w.store.commit(
        [],
        [put(keys.VMS + "web1", spec), put(keys.PLACEMENT + "web1", Placement(host=other, at=0))],
    )
    w.agent.run_once()
    assert w.hv.domains() == []


def test_stop_force_powers_off_at_once_a_guest_that_ignores_acpi() -> None:
    w = World(acpi=False)
    w.submit(w.spec())
    w.agent.run_once()
    stop = w.power("stop", force=True)
    w.agent.run_once()
    assert w.states() == [DomainState.SHUTOFF]
    assert w.status().state == VMState.STOPPED and w.task(stop).state == TaskState.SUCCEEDED
    assert w.events("shutdown") == []  # no ACPI request first


def test_a_forced_stop_leaves_later_stops_graceful() -> None:
    w = World(acpi=False)
    w.submit(w.spec(stop_timeout_s=30))
    w.agent.run_once()
    w.power("stop", force=True)
    w.agent.run_once()
    w.power("start")
    w.agent.run_once()
    w.power("stop")
    w.agent.run_once()
    w.agent.run_once()
    assert w.states() == [DomainState.RUNNING]  # the guest has its 30 s to shut down
    assert w.status().state == VMState.STOPPING


def test_reboot_force_hard_resets_a_guest_that_ignores_acpi() -> None:
    w = World(acpi=False)
    w.submit(w.spec())
    w.agent.run_once()
    boots = w.hv.boots("web1")
    w.power("reboot")
    w.agent.run_once()
    assert w.hv.boots("web1") == boots  # an ACPI reboot: this guest ignores it
    reset = w.power("reboot", force=True)
    w.agent.run_once()
    assert w.hv.boots("web1") == boots + 1 and w.task(reset).state == TaskState.SUCCEEDED
    assert len(w.events("reset")) == 1
    w.agent.run_once()
    assert w.hv.boots("web1") == boots + 1  # once, not every pass


def test_a_crashed_guest_is_restarted() -> None:
    w = World()
    w.submit(w.spec())
    w.agent.run_once()
    boots = w.hv.boots("web1")
    starts = len(w.events("start"))
    w.hv.crash("web1")
    w.agent.run_once()
    assert w.states() == [DomainState.RUNNING] and w.hv.boots("web1") == boots + 1
    assert w.status().state == VMState.RUNNING
    assert len(w.events("start")) == starts + 1
    assert [e.message for e in w.events("notice")] == [
        "the guest crashed (its QEMU ended unexpectedly): started again"
    ]


def test_a_guest_that_crashes_while_stopping_is_reported_crashed() -> None:
    w = World(acpi=False)
    w.submit(w.spec())
    w.agent.run_once()
    w.power("stop")
    w.agent.run_once()
    assert w.status().state == VMState.STOPPING
    w.hv.crash("web1")
    w.agent.run_once()
    assert w.states() == [DomainState.CRASHED]  # kept for the operator to look at
    assert w.status().state == VMState.CRASHED
    assert [e.message for e in w.events("state")][-1] == "stopping -> crashed"


# -- strays and drift (agent/strays.py, agent/decide.py) ---------------------------------


def place(w: World, host: str, vm: str = "web1") -> None:
    w.store.commit([], [put(keys.PLACEMENT + vm, Placement(host=host, at=w.now))])


def test_a_stray_domain_is_stopped_and_undefined_with_its_disk_kept() -> None:
    w = World()
    w.submit(w.spec())
    w.agent.run_once()
    assert w.states() == [DomainState.RUNNING]
    place(w, "h2")  # the VM now belongs to h2 (HA restarted it there, say)
    w.agent.run_once()
    assert w.hv.domains() == []
    assert w.vols.exists("/pool", "web1")  # on shared storage: h2's now
    [claim] = w.events("stray")
    assert claim.message == (
        "stray domain of web1 (placed on h2) on h1: removing it (its disk is kept)"
    )
    [done] = w.events("stray-removed")
    assert done.message == "stray domain of web1 (placed on h2) stopped and undefined on h1"
    assert done.object == "vm/web1" and done.actor == "agent:h1"
    w.agent.run_once()  # nothing left to do: no more events
    assert len(w.events("stray-removed")) == 1


def test_a_stopped_stray_is_undefined() -> None:
    w = World()
    w.submit(w.spec(power=Power.STOPPED))
    w.agent.run_once()
    assert w.states() == [DomainState.SHUTOFF]
    place(w, "h2")
    w.agent.run_once()
    assert w.hv.domains() == []
    [done] = w.events("stray-removed")
    assert done.message == "stray domain of web1 (placed on h2) undefined on h1"


@pytest.mark.parametrize(("source", "target"), [("h2", "h1"), ("h1", "h2")])
def test_a_domain_migrating_to_or_from_here_is_not_stray(source: str, target: str) -> None:
    w = World()
    w.submit(w.spec())
    w.agent.run_once()
    place(w, "h2")
    # queued, so that this agent does not run it: only the record protects the domain
    m = Migration(
        vm="web1",
        source=source,
        target=target,
        task="t1",
        state=MigrationState.QUEUED,
        started_at=0,
    )
    w.store.commit([], [put(keys.MIGRATIONS + "web1", m)])
    w.agent.run_once()
    assert w.states() == [DomainState.RUNNING]
    assert w.events("stray") == []


def test_a_domain_whose_vm_is_unplaced_or_gone_is_left_alone() -> None:
    w = World()
    w.submit(w.spec())
    w.agent.run_once()
    w.store.commit([], [Delete(keys.PLACEMENT + "web1")])
    w.agent.run_once()
    w.store.commit([], [Delete(keys.VMS + "web1")])
    w.agent.run_once()
    assert w.states() == [DomainState.RUNNING]
    assert w.events("stray") == [] and w.events("stray-removed") == []


def test_a_domain_kumo_does_not_own_is_never_touched() -> None:
    w = World()
    w.hv.define(
        DomainConfig(
            "web1", "6b756d6f-0000-4000-8000-0000000000ff", "qemu", 1, 64, (), (), owner="someone"
        )
    )
    w.hv.start("web1")
    w.store.commit([], [put(keys.VMS + "web1", w.spec())])
    place(w, "h2")
    w.agent.run_once()
    assert w.states() == [DomainState.RUNNING]


class StalePlacements(MemoryStore):
    """A store whose placement listing is an old snapshot, as a pass that read placements
    just before a migration's switch-over committed sees them."""

    stale: list[Entry] | None = None

    def range(self, prefix: str) -> list[Entry]:
        if prefix == keys.PLACEMENT and self.stale is not None:
            return self.stale
        return super().range(prefix)


def test_a_stale_placement_is_checked_again_before_a_domain_is_removed() -> None:
    w = World(store=StalePlacements)
    store = w.store
    assert isinstance(store, StalePlacements)
    w.submit(w.spec())
    w.agent.run_once()
    place(w, "h2")
    store.stale = store.range(keys.PLACEMENT)  # "placed on h2, no migration"...
    place(w, "h1")  # ...but the move to h1 ended before the domains were listed
    w.agent.run_once()
    assert w.states() == [DomainState.RUNNING]
    assert w.events("stray") == []


def test_a_drifted_definition_is_defined_again_for_the_next_boot() -> None:
    w = World()
    w.submit(w.spec())
    w.agent.run_once()
    boots = w.hv.boots("web1")
    defines = len(w.events("define"))
    w.agent.run_once()  # nothing drifted: nothing defined
    assert len(w.events("define")) == defines
    bigger = w.spec(memory_mib=1024)
    w.store.commit([], [put(keys.VMS + "web1", bigger)])
    w.agent.run_once()
    [dom] = w.hv.domains()
    pool = Pool(name="shared", kind="shared-dir", path="/pool")
    assert dom.digest == config_digest(w.agent.domain_config(bigger, pool))
    assert dom.state == DomainState.RUNNING and w.hv.boots("web1") == boots  # not restarted
    assert len(w.events("define")) == defines + 1
    [notice] = [e for e in w.events("notice") if "drifted" in e.message]
    assert notice.message == (
        "its definition drifted from the spec: defined again "
        "(the running guest gets it at its next boot)"
    )
    w.agent.run_once()  # defined once, not on every pass
    assert len(w.events("define")) == defines + 1


class MigrationStartsMidCheck(MemoryStore):
    """A store in which a migration of web1 is recorded right after the agent, checking a
    stray, read its (still absent) migration record."""

    armed = False

    def get(self, key: str) -> Entry | None:
        if self.armed and key == keys.PLACEMENT + "web1":
            self.armed = False
            m = Migration(vm="web1", source="h2", target="h1", task="t1", started_at=0)
            self.commit([], [put(keys.MIGRATIONS + "web1", m)])
        return super().get(key)


def test_a_stray_is_claimed_only_while_no_migration_of_it_began() -> None:
    w = World(store=MigrationStartsMidCheck)
    store = w.store
    assert isinstance(store, MigrationStartsMidCheck)
    w.submit(w.spec())
    w.agent.run_once()
    place(w, "h2")
    store.armed = True
    w.agent.run_once()
    assert w.states() == [DomainState.RUNNING]  # the claim was refused: nothing removed
    assert w.events("stray") == [] and w.events("stray-removed") == []


def test_a_host_starts_the_vms_it_takes_over_side_by_side() -> None:
    """A host given a dead host's VMs starts them at once, not one after the other: each
    start here waits for a second one to begin (a barrier), which a serial pass never does."""
    import dataclasses
    import threading

    w = World()
    w.agent.config = dataclasses.replace(w.agent.config, threaded=True, workers=4)
    barrier = threading.Barrier(2, timeout=5)
    real_start = w.hv.start

    def start(name: str) -> None:
        barrier.wait()  # BrokenBarrierError if no other start comes within 5 s
        real_start(name)

    w.hv.start = start  # type: ignore[method-assign]
    for name in ("a1", "a2"):
        w.submit(w.spec(name))
    w.agent.run_once()
    assert sorted(d.name for d in w.hv.domains() if d.state == DomainState.RUNNING) == [
        "a1",
        "a2",
    ]
    assert w.status("a1").state == w.status("a2").state == VMState.RUNNING


# -- network paths (agent/paths.py) and the storage auto-resume ---------------------------


class Pings:
    """The simulated pings: each target answers unless it is down; the rounds are counted."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.rounds: list[tuple[str, ...]] = []

    def __call__(self, targets: Sequence[str], timeout_s: float) -> Mapping[str, bool]:
        assert 0 < timeout_s < 1  # below the interval (1 s)
        self.rounds.append(tuple(targets))
        return {t: t not in self.down for t in targets}


def with_pings(w: World) -> Pings:
    pings = Pings()
    w.agent.probe = pings
    return pings


def rounds(w: World, n: int) -> None:
    """``n`` rounds of the path monitor, a second apart, the lease kept."""
    for _ in range(n):
        w.wait(1)
        w.agent.check_paths()


def reported(w: World) -> tuple[HostPaths, Entry]:
    entry = w.store.get(keys.PATHS + "h1")
    assert entry is not None
    return decode(HostPaths, entry), entry


def test_paths_are_reported_under_the_lease_when_their_judgement_changes() -> None:
    w = World()
    pings = with_pings(w)
    w.agent.check_paths()
    assert pings.rounds == [(ROUTER, NAS)]  # every target of both paths at once
    paths, entry = reported(w)
    assert (paths.public.state, paths.storage.state) == (PathState.UP, PathState.UP)
    assert paths.public.targets == (ROUTER,) and paths.storage.targets == (NAS,)
    assert entry.lease == w.agent.lease and w.agent.paths_up(NetPath.STORAGE) is True
    assert sorted(e.message for e in w.events("path")) == [
        f"public path up since 00:16:40 UTC: {ROUTER} answering",
        f"storage path up since 00:16:40 UTC: {NAS} answering",
    ]
    rounds(w, 3)  # nothing changed: nothing written
    assert reported(w)[1].mod_revision == entry.mod_revision and len(w.events("path")) == 2

    pings.down = {NAS}
    rounds(w, 2)
    assert reported(w)[0].storage.state == PathState.UP  # two misses: not yet
    rounds(w, 1)
    paths, entry = reported(w)
    assert paths.storage.state == PathState.DOWN and paths.public.state == PathState.UP
    assert paths.storage.since == w.now and w.agent.paths_up(NetPath.STORAGE) is False
    [event] = [e for e in w.events("path") if "down" in e.message]
    assert event.object == "host/h1" and event.message == (
        f"storage path down since 00:16:46 UTC: {NAS}: 3 pings unanswered"
    )

    pings.down = set()
    rounds(w, 5)  # answering for 4 s: still down (dampening)
    assert reported(w)[0].storage.state == PathState.DOWN
    rounds(w, 1)
    assert reported(w)[0].storage.state == PathState.UP
    assert w.events("path")[-1].message.endswith(f"{NAS} answering for 5 s")


def test_the_paths_report_goes_with_the_lease_and_comes_back_with_the_next() -> None:
    w = World()
    with_pings(w)
    w.agent.check_paths()
    w.now += 10  # no keep-alive: the lease expires, and the report with it
    assert w.store.get(keys.PATHS + "h1") is None
    w.agent.check_paths()  # no lease: nothing to bind it to, nothing written
    assert w.store.get(keys.PATHS + "h1") is None
    w.agent.keepalive()  # registers again: the report is put again under the new lease
    paths, entry = reported(w)
    assert entry.lease == w.agent.lease and paths.storage.state == PathState.UP


def test_the_paths_are_judged_while_the_store_is_out_of_reach_and_reported_after() -> None:
    """The storage path going is often why the store is out of reach: the judgement (and
    the resume that waits for it) must not wait for the store."""
    w = World()
    pings = with_pings(w)
    w.agent.check_paths()
    w.host.links.control = False
    pings.down = {NAS}
    for _ in range(3):
        w.now += 1
        w.agent.check_paths()
    assert w.agent.paths_up(NetPath.STORAGE) is False
    w.host.links.control = True
    w.agent.keepalive()
    w.agent.check_paths()
    assert reported(w)[0].storage.state == PathState.DOWN
    assert any("storage path down" in e.message for e in w.events("path"))


def test_a_lost_nas_pauses_the_guest_and_the_agent_resumes_it_when_the_path_is_back() -> None:
    w = World()
    pings = with_pings(w)
    w.agent.check_paths()
    w.submit(w.spec())
    w.agent.run_once()
    boots = w.hv.boots("web1")
    pings.down = {NAS}
    rounds(w, 3)
    assert w.hv.storage_lost() == ["web1"]  # QEMU's error_policy='stop'
    for _ in range(3):
        w.agent.run_once()
        rounds(w, 1)
        assert w.states() == [DomainState.PAUSED]  # left paused while the path is down
    assert w.status().state == VMState.PAUSED
    assert w.status().message == "paused: storage I/O error, waiting for the NAS"
    assert w.events("resume") == []

    pings.down = set()
    rounds(w, 5)  # the dampening: 4 s of answers are not enough
    w.agent.run_once()
    assert w.states() == [DomainState.PAUSED]
    rounds(w, 1)
    w.agent.run_once()
    assert w.states() == [DomainState.RUNNING] and w.hv.boots("web1") == boots  # same boot
    assert w.status().state == VMState.RUNNING
    assert [e.message for e in w.events("notice")] == [
        "resumed after the storage path came back (paused on I/O error at 00:16:43 UTC)"
    ]
    assert len(w.events("resume")) == 1


def test_a_guest_paused_by_someone_else_is_not_resumed() -> None:
    w = World()
    with_pings(w)
    w.agent.check_paths()
    w.submit(w.spec())
    w.agent.run_once()
    w.hv.pause("web1")  # an operator's virsh suspend
    w.agent.run_once()
    w.agent.run_once()
    assert w.states() == [DomainState.PAUSED] and w.status().state == VMState.PAUSED


def test_a_replaced_agent_cannot_report_paths() -> None:
    """The report carries the agent's fence, as its other writes: an old agent process
    (the host's agent restarted meanwhile) is refused."""
    w = World()
    pings = with_pings(w)
    old = w.agent
    old.check_paths()
    new = w.new_agent()
    new.probe = pings
    new.register()
    new.check_paths()
    pings.down = {NAS}
    for _ in range(3):
        w.now += 1
        old.check_paths()
    assert old.paths_up(NetPath.STORAGE) is False  # judged, but not reported:
    paths, entry = reported(w)
    assert paths.storage.state == PathState.UP and entry.lease == new.lease


def test_a_pass_ends_only_when_every_vm_of_it_is_done_even_after_an_error() -> None:
    """One VM's reconcile fails (etcd away) while another's start is still in libvirt: the
    pass waits for that start before it raises, so the next pass can never start the same
    VM a second time beside it (a false "already running" start failure)."""
    import dataclasses
    import threading

    from kumo.store.base import StoreUnavailable

    w = World()
    w.agent.config = dataclasses.replace(w.agent.config, threaded=True, workers=4)
    for name in ("a1", "a2"):
        w.submit(w.spec(name))
    real = w.agent._reconcile
    done = threading.Event()

    def reconcile(spec: VMSpec, *args: object, **kw: object) -> None:
        if spec.name == "a1":
            raise StoreUnavailable("etcd: connection refused")
        threading.Event().wait(0.3)  # a start inside libvirt
        real(spec, *args, **kw)  # type: ignore[arg-type]
        done.set()

    w.agent._reconcile = reconcile  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        w.agent.run_once()
    assert done.is_set()  # a2's reconcile had ended when the pass raised
