"""The agent against the in-memory store, the fake hypervisor and fake volumes."""

from __future__ import annotations

import pytest

from kumo.agent.agent import Agent, AgentConfig
from kumo.hypervisor.base import DomainState
from kumo.hypervisor.fake import FakeHypervisor
from kumo.model.activity import Event, Task, TaskState
from kumo.model.host import HostRecord, Image, Network, Pool
from kumo.model.vm import Placement, Power, VMSpec, VMState, VMStatus
from kumo.server.service import ClusterService
from kumo.sim.cluster import vm_spec
from kumo.storage.pool_identity import FakePoolIds
from kumo.storage.volumes import FakeVolumes
from kumo.store import keys
from kumo.store.activity import new_task
from kumo.store.memory import MemoryStore
from kumo.store.records import decode, load, put


class World:
    def __init__(self, acpi: bool = True) -> None:
        self.now = 1000.0
        self.store = MemoryStore(clock=lambda: self.now)
        self.hv = FakeHypervisor("h1", acpi=acpi)
        self.vols = FakeVolumes({"images/tg.qcow2"})
        self.pool_ids = FakePoolIds()
        self.store.commit(
            [],
            [
                put(keys.POOLS + "shared", Pool(name="shared", kind="shared-dir", path="/pool")),
                put(keys.NETWORKS + "public", Network(name="public", bridge="br0")),
                put(
                    keys.IMAGES + "tg",
                    Image(
                        name="tg", pool="shared", path="images/tg.qcow2", size_gib=1, created_at=0
                    ),
                ),
            ],
        )
        self.agent = self.new_agent()
        self.agent.register()
        self.svc = ClusterService(self.store, clock=lambda: self.now)

    def new_agent(self) -> Agent:
        return Agent(
            AgentConfig("h1", "198.18.1.11", "qemu"),
            self.store,
            self.hv,
            self.vols,
            clock=lambda: self.now,
            path_exists=lambda p: True,
            pool_ids=self.pool_ids,
        )

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
    assert w.store.get(keys.ALIVE + "h1") is not None
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
