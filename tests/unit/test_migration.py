"""Live migration through the API and two agents, on the in-memory store and fake
hypervisors: the command's checks, progress, switch-over, cancel and failure."""

from __future__ import annotations

from typing import Literal

import pytest

from kumo.agent.agent import Agent
from kumo.agent.strategy import Measured, choose
from kumo.hypervisor.base import Directive, DomainState
from kumo.hypervisor.fake import FakeHypervisor
from kumo.model.activity import Task, TaskState
from kumo.model.host import HostRecord
from kumo.model.migration import MigrationOverride, MigrationPolicy, MigrationSettings
from kumo.model.vm import Migration, Placement, VMSpec
from kumo.server.errors import Conflict, Invalid, NotFound
from kumo.server.schemas import ImageImport, PoolCreate, VMCreate
from kumo.sim.clock import VirtualClock
from kumo.sim.world import World
from kumo.storage.volumes import FakeVolumes
from kumo.store import keys
from kumo.store.base import Delete
from kumo.store.records import load, put


class Cluster:
    """Three hosts of a simulated world (kumo.sim.World) and no controllers: the tests drive
    the service by hand and ``tick`` the agents."""

    def __init__(self, domain_type: Literal["kvm", "qemu"] = "qemu") -> None:
        self.world = World(("h1", "h2", "h3"), replicas=0, domain_type=domain_type)
        self.store = self.world.store
        self.svc = self.world.service
        self.vols = self.world.volumes
        self.hv: dict[str, FakeHypervisor] = {n: h.hv for n, h in self.world.hosts.items()}
        self.agents: dict[str, Agent] = self.world.agents()
        for a in self.agents.values():
            # the storage link as the source agent's probe measures it
            a.migrator.probe = lambda addr, port, secret, s: self.link_mib_s
        self.link_mib_s: float | None = 1000.0

    def tick(self) -> None:
        """One pass of every agent, no time passing (an agent whose libvirtd is down fails
        its pass, as its daemon's would)."""
        self.world.step(0)

    def host_of(self, vm: str) -> str:
        found = load(self.store, Placement, keys.PLACEMENT + vm)
        assert found is not None
        return found[0].host

    def task(self, tid: str) -> Task:
        return self.svc.task(tid)


@pytest.fixture
def c() -> Cluster:
    cluster = Cluster()
    cluster.svc.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    cluster.svc.create_vm(VMCreate(name="free", image="img", memory_mib=128), "t")
    cluster.tick()
    return cluster


def test_migrate_moves_the_running_vm_and_reports_progress(c: Cluster) -> None:
    boots = c.hv["h1"].boots("web1")
    task = c.svc.migrations.migrate("web1", "h2", "t")
    c.tick()
    assert c.host_of("web1") == "h2"
    assert "web1" in [d.name for d in c.hv["h2"].domains()]
    assert "web1" not in [d.name for d in c.hv["h1"].domains()]
    assert c.hv["h2"].boots("web1") == boots  # moved, not restarted
    done = c.task(task.id)
    assert done.state == TaskState.SUCCEEDED and done.migration is not None
    assert done.migration.downtime_ms == 42.0 and "now runs on h2" in done.message
    c.tick()
    assert c.svc.vm("web1").state == "running" and c.svc.vm("web1").host == "h2"
    assert c.store.range(keys.MIGRATIONS) == []


def test_scheduler_picks_a_target_other_than_the_source(c: Cluster) -> None:
    source = c.host_of("free")
    c.svc.migrations.migrate("free", None, "t")
    c.tick()
    assert c.host_of("free") != source


def test_cancel_leaves_the_vm_on_the_source(c: Cluster) -> None:
    task = c.svc.migrations.migrate("web1", "h3", "t")
    c.svc.migrations.cancel_task(task.id, "t")
    c.tick()
    assert c.host_of("web1") == "h1"
    assert "web1" not in [d.name for d in c.hv["h3"].domains()]
    assert c.task(task.id).state == TaskState.CANCELLED
    assert "runs on h1 as before" in c.task(task.id).message
    with pytest.raises(Conflict, match="already cancelled"):
        c.svc.migrations.cancel_task(task.id, "t")


def test_unreachable_target_fails_and_keeps_the_vm(c: Cluster) -> None:
    c.hv["h2"].up = False  # libvirtd on h2 is down
    task = c.svc.migrations.migrate("web1", "h2", "t")
    c.tick()
    assert c.host_of("web1") == "h1"
    t = c.task(task.id)
    assert t.state == TaskState.FAILED and "unable to connect" in t.message


def test_bad_requests(c: Cluster) -> None:
    with pytest.raises(NotFound):
        c.svc.migrations.migrate("nosuch", None, "t")
    with pytest.raises(Conflict, match="to: no host named h9"):
        c.svc.migrations.migrate("web1", "h9", "t")
    with pytest.raises(Conflict, match="to: vm web1 already runs on h1"):
        c.svc.migrations.migrate("web1", "h1", "t")
    with pytest.raises(Conflict, match="pinned to host h1"):
        c.svc.migrations.migrate("web1", None, "t")
    c.svc.power("free", "stop", True, "t")
    c.tick()
    with pytest.raises(Conflict, match="live migration moves a running VM"):
        c.svc.migrations.migrate("free", None, "t")
    task = c.svc.migrations.migrate("web1", "h2", "t")
    with pytest.raises(Conflict, match=f"already migrating \\(task {task.id}\\)"):
        c.svc.migrations.migrate("web1", "h3", "t")
    with pytest.raises(Conflict, match="cannot be cancelled"):
        c.svc.migrations.cancel_task(c.svc.power("free", "start", False, "t").id, "t")


def test_maintenance_drains_the_host_and_fail_back_returns_the_vms() -> None:
    c = Cluster()
    c.svc.migrations.maintenance("h2", "enter", True, "t")
    c.svc.migrations.maintenance("h3", "enter", True, "t")
    for i in range(4):
        c.svc.create_vm(VMCreate(name=f"d{i}", image="img", memory_mib=128), "t")
    c.tick()
    c.svc.migrations.drain("ctl")  # h2 and h3 are empty: straight to maintenance
    assert {h.name: h.maintenance for h in c.svc.hosts()} == {
        "h1": None,
        "h2": "maintenance",
        "h3": "maintenance",
    }
    assert {c.host_of(f"d{i}") for i in range(4)} == {"h1"}
    c.svc.migrations.maintenance("h2", "exit", True, "t")
    c.svc.migrations.maintenance("h3", "exit", True, "t")

    task = c.svc.migrations.maintenance("h1", "enter", True, "t")[0]
    for _ in range(4):  # two migrations at a time on h1, the rest queued
        c.svc.migrations.drain("ctl")
        c.svc.migrations.start_queued("ctl")
        c.tick()
    c.svc.migrations.drain("ctl")
    assert {c.host_of(f"d{i}") for i in range(4)} <= {"h2", "h3"}
    assert c.task(task.id).state == TaskState.SUCCEEDED
    h1 = next(h for h in c.svc.hosts() if h.name == "h1")
    assert h1.maintenance == "maintenance" and not h1.schedulable
    # nothing new lands on a host in maintenance
    view, _ = c.svc.create_vm(VMCreate(name="new", image="img", memory_mib=128), "t")
    assert view.host != "h1"

    back = c.svc.migrations.maintenance("h1", "exit", True, "t")
    assert len(back) == 4
    assert sum(c.task(t.id).message.startswith("queued") for t in back) == 2  # 2 a host
    c.tick()
    c.svc.migrations.start_queued("ctl")
    c.tick()
    assert {c.host_of(f"d{i}") for i in range(4)} == {"h1"}
    with pytest.raises(Conflict, match="not in maintenance"):
        c.svc.migrations.maintenance("h1", "exit", True, "t")


def test_maintenance_reports_what_cannot_move() -> None:
    c = Cluster()
    c.svc.create_vm(VMCreate(name="pinned", image="img", memory_mib=128, host="h1"), "t")
    c.tick()
    c.svc.migrations.maintenance("h1", "enter", True, "t")
    c.svc.migrations.drain("ctl")
    h1 = next(h for h in c.svc.hosts() if h.name == "h1")
    assert h1.maintenance == "draining"
    assert "pinned: vm pinned is pinned to host h1" in h1.maintenance_message
    with pytest.raises(Conflict, match="already in draining"):
        c.svc.migrations.maintenance("h1", "enter", True, "t")
    with pytest.raises(NotFound):
        c.svc.migrations.maintenance("h9", "enter", True, "t")


def test_a_pass_on_a_snapshot_older_than_the_switch_over_does_not_recreate_the_vm(
    c: Cluster,
) -> None:
    """The race seen in CI: the source agent read the placement (still itself), the
    migration finished, then it read the migration records (none left). It must not define
    and start the VM again (QEMU's image lock was the only thing that stopped it)."""
    task = c.svc.migrations.migrate("web1", "h2", "t")
    c.agents["h1"].run_once()
    assert c.task(task.id).state == TaskState.SUCCEEDED
    # put the old placement back, written before the switch-over's revision
    agent = c.agents["h1"]
    agent.migrator.moved_away["web1"] = c.store.revision() + 2  # the switch-over comes after
    c.store.commit([], [put(keys.PLACEMENT + "web1", Placement(host="h1", at=0))])
    agent.run_once()
    assert "web1" not in [d.name for d in c.hv["h1"].domains()]


@pytest.mark.parametrize(
    ("domain_type", "strategy"),
    [("kvm", "pre-copy+throttle+compression"), ("qemu", "pre-copy")],
)
def test_a_busy_guest_on_a_slow_link_gets_throttling_and_compression_unless_tcg(
    domain_type: Literal["kvm", "qemu"], strategy: str
) -> None:
    c = Cluster(domain_type)
    c.svc.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    c.tick()
    c.link_mib_s = 9.5  # 80 Mbit/s
    c.hv["h1"].dirty_mib_s = 60.0
    task = c.svc.migrations.migrate("web1", "h2", "t")
    c.tick()
    t = c.task(task.id)
    assert t.state == TaskState.SUCCEEDED and c.host_of("web1") == "h2"
    assert t.migration is not None and t.migration.strategy is not None
    s = t.migration.strategy
    assert s.name == strategy
    if domain_type == "qemu":
        return
    assert (s.link_mib_s, s.dirty_rate_mib_s) == (9.5, 60.0)
    assert s.throttle_initial == 99 and s.compression and not s.xbzrle
    assert c.hv["h1"].strategies == [s]
    events = [e.action for e in c.svc.events(obj="vm/web1")]
    assert "migration-strategy" in events


def test_an_idle_guest_on_a_fast_link_is_not_measured_for_dirt(c: Cluster) -> None:
    c.hv["h1"].dirty_mib_s = 500.0  # would choose throttling, were it measured
    task = c.svc.migrations.migrate("web1", "h2", "t")
    c.tick()
    s = c.hv["h1"].strategies[0]
    assert s.name == "pre-copy" and s.dirty_rate_mib_s is None
    assert c.task(task.id).state == TaskState.SUCCEEDED


def test_policy_comes_from_cluster_vm_and_request(c: Cluster) -> None:
    c.svc.migrations.set_settings(
        MigrationSettings(policy=MigrationPolicy(downtime_ms=200, bandwidth_mib_s=50)), "t"
    )
    c.svc.migrations.set_vm_policy("web1", MigrationOverride(downtime_ms=100), "t")
    c.svc.migrations.migrate("web1", "h2", "t", override=MigrationOverride(bandwidth_mib_s=20))
    found = load(c.store, Migration, keys.MIGRATIONS + "web1")
    assert found is not None
    p = found[0].policy
    assert (p.downtime_ms, p.bandwidth_mib_s, p.max_downtime_ms) == (100, 20, 2000)
    c.tick()
    assert c.hv["h1"].strategies[0].bandwidth_mib_s == 20
    with pytest.raises(Conflict, match="max_downtime_ms"):  # over the cluster's: state
        c.svc.migrations.set_vm_policy("web1", MigrationOverride(downtime_ms=5000), "t")
    with pytest.raises(Invalid, match="max_downtime_ms"):
        c.svc.migrations.set_settings(
            MigrationSettings(policy=MigrationPolicy(downtime_ms=3000)), "t"
        )
    with pytest.raises(NotFound):
        c.svc.migrations.set_vm_policy("nosuch", MigrationOverride(), "t")


def test_the_completion_timeout_aborts_and_the_vm_stays(c: Cluster) -> None:
    c.svc.migrations.set_vm_policy(
        "web1", MigrationOverride(min_timeout_s=5, timeout_s_per_gib=5), "t"
    )
    c.hv["h1"].migration_steps = 20  # progress samples one second apart
    task = c.svc.migrations.migrate("web1", "h2", "t")
    c.tick()
    t = c.task(task.id)
    assert t.state == TaskState.FAILED and "did not complete within 5 s" in t.message
    assert "never force-paused" in t.message
    assert c.host_of("web1") == "h1" and c.hv["h1"].boots("web1") == 1
    assert "web1" not in [d.name for d in c.hv["h2"].domains()]


def test_migrations_beyond_the_limits_queue_and_start_in_turn() -> None:
    c = Cluster()
    c.svc.migrations.set_settings(MigrationSettings(max_per_host=1), "t")
    for name in ("a", "b", "x"):
        c.svc.create_vm(VMCreate(name=name, image="img", memory_mib=128, host="h1"), "t")
    c.tick()
    first = c.svc.migrations.migrate("a", "h2", "t")
    second = c.svc.migrations.migrate("b", "h3", "t")
    third = c.svc.migrations.migrate("x", "h3", "t")
    assert c.task(second.id).state == TaskState.QUEUED
    assert c.task(second.id).message == "queued: 1 migrations running on h1 (limit 1)"
    assert c.svc.migrations.start_queued("ctl") == []  # still full
    c.svc.migrations.cancel_task(third.id, "t")  # a queued one just leaves the queue
    assert c.task(third.id).state == TaskState.CANCELLED
    assert load(c.store, Migration, keys.MIGRATIONS + "x") is None
    c.tick()  # a moves; b is not touched while queued
    assert (c.host_of("a"), c.host_of("b")) == ("h2", "h1")
    assert c.task(first.id).state == TaskState.SUCCEEDED
    assert c.svc.migrations.start_queued("ctl") == ["b"]
    c.tick()
    assert c.host_of("b") == "h3" and c.task(second.id).state == TaskState.SUCCEEDED


def test_cold_migration_moves_a_stopped_vm(c: Cluster) -> None:
    with pytest.raises(Conflict, match="cold migration moves a stopped VM"):
        c.svc.migrations.migrate("free", "h3", "t", cold=True)
    c.svc.power("free", "stop", True, "t")
    c.tick()
    with pytest.raises(Conflict, match="live migration moves a running VM"):
        c.svc.migrations.migrate("free", "h3", "t")
    source = c.host_of("free")
    target = "h3" if source != "h3" else "h2"
    task = c.svc.migrations.migrate("free", target, "t", cold=True)
    c.tick()
    c.tick()
    assert c.task(task.id).state == TaskState.SUCCEEDED
    assert c.host_of("free") == target
    assert "free" not in [d.name for d in c.hv[source].domains()]
    [dom] = [d for d in c.hv[target].domains() if d.name == "free"]
    assert dom.state == "shutoff"
    assert c.svc.vm("free").state == "stopped"


def test_a_recent_background_sample_spares_the_wait_for_a_dirty_rate(c: Cluster) -> None:
    clock = VirtualClock(1000.0)
    src = c.agents["h1"]
    src.migrator.clock = clock
    c.link_mib_s = 9.5  # slow: the dirty rate matters
    c.hv["h1"].dirty_mib_s = 30.0
    c.tick()  # samples web1 in the background
    clock.advance(5)
    c.svc.migrations.migrate("web1", "h2", "t")
    c.tick()
    assert c.hv["h1"].measured == [] and c.hv["h1"].strategies[-1].dirty_rate_mib_s == 30.0
    c.svc.migrations.migrate("free", "h3" if c.host_of("free") != "h3" else "h2", "t")
    free_src = c.agents[c.host_of("free")]
    free_src.migrator.sampled.clear()  # e.g. the agent just restarted: measure now
    c.tick()
    assert c.hv[free_src.config.host].measured == ["free"]


def test_a_host_local_disk_is_copied_and_the_old_one_removed() -> None:
    c = Cluster()
    c.svc.create_pool(PoolCreate(name="local", kind="local-dir", path="/local"), "t")
    c.svc.import_image(ImageImport(name="limg", pool="local", path="limg.qcow2"), "t")
    for a in c.agents.values():
        a.volumes = FakeVolumes()  # host-local: each host its own
        a.refresh_host()
    c.svc.create_vm(VMCreate(name="loc", image="limg", memory_mib=128, host="h1"), "t")
    c.tick()
    src, dst = c.agents["h1"].volumes, c.agents["h2"].volumes
    assert isinstance(src, FakeVolumes) and isinstance(dst, FakeVolumes)
    assert src.exists("/local", "loc") and not dst.exists("/local", "loc")
    task = c.svc.migrations.migrate("loc", "h2", "t")
    c.tick()
    assert c.task(task.id).state == TaskState.SUCCEEDED and c.host_of("loc") == "h2"
    assert dst.exists("/local", "loc") and not src.exists("/local", "loc")
    assert c.hv["h1"].targets[-1].copy_storage == "inc"
    # a failed copy leaves nothing on the target
    routed = c.agents["h2"].migrator.incoming
    c.agents["h2"].migrator.incoming = lambda rec, secret, method, vm: (0, "unreachable")
    task = c.svc.migrations.migrate("loc", "h3", "t")
    c.agents["h2"].run_once()
    t = c.task(task.id)
    assert t.state == TaskState.FAILED and "could not make the disk" in t.message
    c.agents["h2"].migrator.incoming = routed
    task = c.svc.migrations.migrate("loc", "h3", "t")
    c.hv["h3"].accept_migrations = False
    c.agents["h2"].run_once()
    assert c.task(task.id).state == TaskState.FAILED
    assert not c.agents["h3"].volumes.exists("/local", "loc")
    assert dst.exists("/local", "loc") and c.host_of("loc") == "h2"
    c.svc.power("loc", "stop", True, "t")
    c.tick()
    with pytest.raises(Conflict, match="host-local; cold migration"):
        c.svc.migrations.migrate("loc", "h3", "t", cold=True)


def test_a_quiet_guest_is_migrated_without_probing_the_link(c: Cluster) -> None:
    clock = VirtualClock(1000.0)
    src = c.agents["h1"]
    src.migrator.clock = clock
    probes: list[str] = []

    def probe(addr: str, port: int, secret: str, seconds: float) -> float:
        probes.append(addr)
        return 9.5

    src.migrator.probe = probe
    c.hv["h1"].dirty_mib_s = 0.2
    c.tick()
    clock.advance(5)
    c.svc.migrations.migrate("web1", "h2", "t")
    c.tick()
    s = c.hv["h1"].strategies[-1]
    assert probes == [] and s.name == "pre-copy" and s.dirty_rate_mib_s == 0.2
    assert s.link_mib_s is None


@pytest.mark.parametrize("switched", [True, False])
def test_a_migration_whose_source_host_died_is_ended_by_the_target(
    c: Cluster, switched: bool
) -> None:
    task = c.svc.migrations.migrate("web1", "h2", "t")
    if switched:  # the switch-over happened, then h1 died before recording it
        c.hv["h2"]._doms["web1"] = c.hv["h1"]._doms.pop("web1")
        c.hv["h2"]._doms["web1"].state = DomainState.RUNNING
    c.store.commit([], [Delete(keys.ALIVE + "h1")])  # its lease expired
    clock = VirtualClock(100.0)
    c.agents["h2"].migrator.clock = clock
    c.agents["h2"].run_once()
    assert c.task(task.id).state == TaskState.QUEUED  # a lease blip is given time
    clock.advance(16)
    c.agents["h2"].run_once()
    t = c.task(task.id)
    assert load(c.store, Migration, keys.MIGRATIONS + "web1") is None
    if switched:
        assert t.state == TaskState.SUCCEEDED and c.host_of("web1") == "h2"
        assert "source host h1 went down" in t.message
    else:
        assert t.state == TaskState.FAILED and c.host_of("web1") == "h1"
        assert "did not arrive on h2" in t.message


def test_a_target_that_cannot_provide_the_cpu_model_is_refused() -> None:
    c = Cluster()
    c.hv["h2"].cpu_models = ("qemu64",)  # an older host: no Nehalem
    c.agents["h2"].register()
    c.svc.create_vm(VMCreate(name="n", image="img", memory_mib=128, cpu_model="Nehalem"), "t")
    c.tick()
    assert c.host_of("n") != "h2"
    to = "h3" if c.host_of("n") == "h1" else "h1"
    with pytest.raises(Conflict, match="CPU model Nehalem incompatible: h2 cannot provide it"):
        c.svc.migrations.migrate("n", "h2", "t")
    c.svc.migrations.migrate("n", to, "t")
    c.tick()
    assert c.host_of("n") == to
    with pytest.raises(Conflict, match="CPU model EPYC incompatible"):
        c.svc.create_vm(VMCreate(name="e", image="img", memory_mib=128, cpu_model="EPYC"), "t")


def test_a_job_that_ends_while_a_restarted_agent_measures_is_recorded_as_a_success(
    c: Cluster,
) -> None:
    """A restarted source agent finds the migration an earlier agent started still running in
    libvirtd; the job completes while the new agent measures, before it attaches. The VM now
    runs on the target: the task succeeds and the placement follows it (seen in the lab)."""
    boots = c.hv["h1"].boots("web1")
    src = c.agents["h1"].migrator
    measure = src.measure

    def libvirtd_finishes_meanwhile(m: Migration, spec: VMSpec, record: HostRecord) -> Measured:
        seen = measure(m, spec, record)
        found = src._target(m)
        assert found is not None
        c.hv["h1"].migrate(m.vm, found[0], choose(m.policy, seen), lambda p: Directive())
        return seen

    src.measure = libvirtd_finishes_meanwhile  # type: ignore[method-assign,assignment]
    task = c.svc.migrations.migrate("web1", "h2", "t")
    c.tick()
    done = c.task(task.id)
    assert done.state == TaskState.SUCCEEDED, done.message
    assert c.host_of("web1") == "h2" and c.hv["h2"].boots("web1") == boots
    assert c.store.range(keys.MIGRATIONS) == []
