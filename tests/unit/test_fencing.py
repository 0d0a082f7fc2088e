"""Fencing tokens (DESIGN §6, kumo.store.lease): a deposed leader's writes and a cut-off
agent's writes are refused by the store; an agent whose VM was placed elsewhere cannot write
that VM's status; an agent that registers again carries on under its new token."""

from __future__ import annotations

import logging
import threading

import pytest

from kumo.agent.agent import Agent
from kumo.hypervisor.base import Domain, DomainState
from kumo.model.activity import TaskState
from kumo.model.vm import Migration, MigrationState, Placement, Power, VMSpec, VMState
from kumo.server.controllers import Controllers
from kumo.server.leader import LeaderElector, run_elected
from kumo.server.schemas import VMCreate
from kumo.server.service import ClusterService
from kumo.sim.clock import VirtualClock
from kumo.store import keys
from kumo.store.activity import event_op, new_task
from kumo.store.base import Delete
from kumo.store.lease import Fenced, LeaseKeeper
from kumo.store.memory import MemoryStore
from kumo.store.records import load, put
from tests.unit.test_agent import World
from tests.unit.test_migration import Cluster


def test_the_keeper_says_lost_before_the_store_can_expire_the_lease() -> None:
    clock = VirtualClock()
    store = MemoryStore(clock=clock.monotonic)
    keeper = LeaseKeeper(store, ttl=5, clock=clock)
    keeper.grant()
    clock.advance(3.9)
    assert keeper.valid
    clock.advance(0.1)  # at 4.0: the TTL counted from before the grant, less a second
    assert not keeper.valid
    keeper.renew()  # still there in the store: renewed, counted from before the request
    assert keeper.valid


def _queued(store: MemoryStore) -> None:
    task = new_task("vm.migrate", "vm/web1", "t", 0.0)
    m = Migration(
        vm="web1",
        task=task.id,
        source="h1",
        target="h2",
        state=MigrationState.QUEUED,
        started_at=0,
    )
    store.commit([], [put(keys.MIGRATIONS + "web1", m), put(keys.TASKS + task.id, task)])


def test_a_deposed_leaders_writes_are_refused() -> None:
    clock = VirtualClock()
    store = MemoryStore(clock=clock.monotonic)
    a = LeaderElector(store, "a", ttl=5, clock=clock)
    b = LeaderElector(store, "b", ttl=5, clock=clock)
    assert a.step()
    fence = a.fence()  # read at the start of a pass; then a stalls (GC pause, lost link)
    clock.advance(6)
    assert b.step()  # a's lease expired: b leads
    _queued(store)
    store.commit([], [event_op("t", "vm/web1", "note", f"e{i}", at=float(i)) for i in range(5)])
    before = store.revision()
    svc = ClusterService(store, clock=clock)
    with pytest.raises(Fenced, match="leader a: write refused"):
        svc.migrations.start_queued("controller:migrations", fence)
    with pytest.raises(Fenced):
        Controllers(svc, max_events=1, fence=lambda: fence).run_once()
    assert store.revision() == before  # nothing written
    found = load(store, Migration, keys.MIGRATIONS + "web1")
    assert found is not None and found[0].state == "queued"
    with pytest.raises(Fenced, match="not leading"):
        a.fence()  # by its own clock a knows it does not lead
    # The new leader's writes go through.
    assert svc.migrations.start_queued("controller:migrations", b.fence()) == ["web1"]


def test_a_refused_leader_write_makes_the_leader_step_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    a = LeaderElector(store, "a")
    stop = threading.Event()

    def work() -> None:
        stop.set()
        raise Fenced("leader a: write refused")

    with caplog.at_level(logging.WARNING, "kumo.leader"):
        run_elected(a, work, stop, period=0, poll=0)
    assert "a: stepping down: leader a: write refused" in caplog.text
    assert store.get(keys.LEADER) is None and not a.is_leader


def _running(w: World) -> None:
    w.submit(w.spec())
    w.agent.run_once()
    assert w.status().state == VMState.RUNNING


def _stop(w: World) -> None:
    spec = load(w.store, VMSpec, keys.VMS + "web1")
    assert spec is not None
    w.store.commit(
        [], [put(keys.VMS + "web1", spec[0].model_copy(update={"power": Power.STOPPED}))]
    )


def test_a_cut_off_agents_status_write_is_refused_until_it_registers_again() -> None:
    w = World()
    _running(w)
    w.now += 10  # no keep-alive reached etcd: the lease expired, the alive key is gone
    _stop(w)
    w.agent.run_once()  # past its own deadline the agent does nothing at all
    assert w.status().state == VMState.RUNNING  # not overwritten by the cut-off agent
    with pytest.raises(Fenced, match="agent h1: write refused"):  # and the store says no
        w.agent.commit(w.agent.fence(), [], [put(keys.VMSTATUS + "web1", w.status())])
    w.agent.keepalive()  # the lease is gone: registers again, a new alive key, a new token
    w.agent.run_once()
    assert w.status().state in (VMState.STOPPING, VMState.STOPPED)


def test_an_agent_replaced_by_a_new_one_is_refused_and_the_new_one_carries_on() -> None:
    w = World()
    _running(w)
    old = w.agent
    new: Agent = w.new_agent()  # restarted quickly: a new lease and a new alive key
    new.register()
    _stop(w)
    with pytest.raises(Fenced):
        old.run_once()
    assert w.status().state == VMState.RUNNING
    new.run_once()
    assert w.status().state in (VMState.STOPPING, VMState.STOPPED)


def test_an_agent_cannot_write_the_status_of_a_vm_placed_elsewhere_meanwhile() -> None:
    w = World()
    tid = w.submit(w.spec())
    spec = load(w.store, VMSpec, keys.VMS + "web1")
    placed = w.store.get(keys.PLACEMENT + "web1")
    assert spec is not None and placed is not None
    # The agent read the placement; before it writes, the VM is placed on h2.
    w.store.commit([], [put(keys.PLACEMENT + "web1", Placement(host="h2", at=1))])
    fence = w.agent.fence("web1", placed.mod_revision)
    with pytest.raises(Fenced, match="placement/web1"):
        w.agent._reconcile(spec[0], spec[1], None, None, fence)
    assert w.store.get(keys.VMSTATUS + "web1") is None
    assert w.task(tid).state == TaskState.QUEUED
    # A pass reads the new placement: the VM is not this host's any more, and the agent
    # itself is not fenced.
    w.agent.run_once()
    assert w.store.get(keys.VMSTATUS + "web1") is None


def test_a_stale_placement_ends_only_that_vms_turn_in_a_pass() -> None:
    w = World()
    w.submit(w.spec("web1"))
    w.submit(w.spec("web2"))

    moved: list[bool] = []
    real = w.hv.domains

    def domains() -> list[Domain]:
        # Each VM's turn reads libvirt after acting: web1 moves to h2 just then.
        if not moved and any(d.name == "web1" for d in real()):
            moved.append(True)
            w.store.commit([], [put(keys.PLACEMENT + "web1", Placement(host="h2", at=1))])
        return real()

    w.hv.domains = domains  # type: ignore[method-assign]
    w.agent.run_once()
    assert w.store.get(keys.VMSTATUS + "web1") is None
    assert w.status("web2").state == VMState.RUNNING
    assert [d.state for d in real() if d.name == "web2"] == [DomainState.RUNNING]


def test_a_cut_off_source_agent_cannot_move_the_placement() -> None:
    c = Cluster()
    c.svc.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    c.tick()
    task = c.svc.migrations.migrate("web1", "h2", "t")
    c.store.commit([], [Delete(keys.ALIVE + "h1")])  # h1's lease expired; its agent runs on
    c.agents["h1"].run_once()
    assert c.host_of("web1") == "h1"
    assert load(c.store, Migration, keys.MIGRATIONS + "web1") is not None
    assert c.task(task.id).state == TaskState.QUEUED
    assert "web1" not in [d.name for d in c.hv["h2"].domains()]
