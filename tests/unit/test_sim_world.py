"""The simulator: real agents and controllers stepped on a virtual clock; the same scenario
gives the same log byte for byte; each invariant violation is caught, named and timed."""

from __future__ import annotations

import pytest

from kumo import faults as f
from kumo.hypervisor.base import DomainState
from kumo.model.vm import Placement
from kumo.server.schemas import VMCreate
from kumo.sim.invariants import InvariantViolated
from kumo.sim.world import World
from kumo.store import keys
from kumo.store.base import Put
from kumo.store.records import load


def host_of(w: World, vm: str) -> str:
    found = load(w.store, Placement, keys.PLACEMENT + vm)
    assert found is not None
    return found[0].host


def scenario(seed: int = 7, migrate: bool = False) -> World:
    """Two replicas; three VMs placed by the leader's scheduler and started by the agents;
    (``migrate``: one migrated); an agent killed and restarted; the leader crashes and the
    standby takes over."""
    w = World(replicas=2, seed=seed)
    for name in ("web1", "web2", "db1"):
        w.service.create_vm(VMCreate(name=name, image="img", memory_mib=128), "t")
    w.run(3)
    w.apply(f.VmPower("web2", "stop"))
    w.run(1)
    if migrate:
        source = host_of(w, "web1")
        w.apply(f.VmMigrate("web1", "h3" if source != "h3" else "h2"))
    w.run(2)
    w.apply(f.KillAgent("h2"))
    w.run(8)  # its lease runs out
    w.apply(f.RestartAgent("h2"))
    w.apply(f.LeaderCrash())
    w.run(10)
    return w


def test_the_same_scenario_gives_the_same_log_byte_for_byte() -> None:
    first, second = scenario(), scenario()
    log = "\n".join(first.log)
    assert log == "\n".join(second.log)
    # non-trivial: VMs started and stopped by agents, faults, a new leader
    assert f"{host_of(first, 'web1')} web1: none -> running" in log
    assert "web2: running -> shutoff" in log
    assert "event vm/web2 state: running -> stopped (agent:" in log
    assert "fault: kill-agent h2" in log and "fault: leader-crash" in log
    assert first.leader() == "s2"
    assert first.violations == []
    assert all(line.startswith("t=") for line in first.log)
    assert len(first.log) > 30


def test_a_scenario_with_a_migration_gives_the_same_log() -> None:
    assert scenario(migrate=True).log == scenario(migrate=True).log


def test_the_vms_run_where_they_are_placed_and_move_with_a_migration() -> None:
    w = scenario(migrate=True)
    assert "event vm/web1 migrated:" in "\n".join(w.log)
    for vm in ("web1", "db1"):
        assert w.running_on(vm) == [host_of(w, vm)]
    assert w.running_on("web2") == []


def test_a_powered_off_host_loses_its_guests_and_its_lease() -> None:
    w = World(replicas=1)
    w.service.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    w.run(2)
    assert w.running_on("web1") == ["h1"]
    w.apply(f.PowerOff("h1"))
    w.run(5)
    assert w.running_on("web1") == [] and w.store.get(keys.ALIVE + "h1") is None
    w.run(5)  # the grace passes: h1 is fenced, and HA runs web1 elsewhere
    assert w.store.get(keys.FENCED + "h1") is not None
    [elsewhere] = w.running_on("web1")
    w.apply(f.PowerOn("h1"))
    w.run(3)
    assert w.running_on("web1") == [elsewhere]  # h1's agent does not start it again
    assert w.store.get(keys.FENCED + "h1") is None  # h1 holds a lease again: unfenced
    assert "t=2.000 fault: power-off h1" in w.log


def test_a_partitioned_agent_fences_itself_and_registers_again_when_healed() -> None:
    w = World(replicas=1)
    w.service.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    w.run(2)
    w.apply(f.Partition("h1"))
    w.run(4)  # its own deadline (TTL less a margin) passed: it destroyed its HA guest
    assert w.running_on("web1") == [] and w.store.get(keys.ALIVE + "h1") is not None
    w.run(4)
    assert w.store.get(keys.ALIVE + "h1") is None and w.running_on("web1") != ["h1"]
    w.apply(f.Heal("h1"))
    w.run(3)
    assert w.store.get(keys.ALIVE + "h1") is not None
    assert len(w.running_on("web1")) == 1 and w.running_on("web1") != ["h1"]


def test_start_and_migrate_failures_are_injected() -> None:
    w = World(replicas=1)
    w.apply(f.StartFails("web1", "h1", 1))
    w.service.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    w.run(1)
    assert w.running_on("web1") == []
    w.run(1)
    assert w.running_on("web1") == ["h1"]
    w.apply(f.MigrateFails("web1"))
    w.apply(f.VmMigrate("web1", "h2"))
    w.run(2)
    assert w.running_on("web1") == ["h1"]
    assert any("migration-failed" in line and "injected" in line for line in w.log)


def test_a_domain_on_two_hosts_is_caught_with_its_time() -> None:
    w = World(replicas=0)
    w.service.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    w.run(2)
    w.apply(f.KillAgent("h2"))  # nobody removes the copy
    h1, h2 = w.hosts["h1"].hv, w.hosts["h2"].hv
    h2.define(h1._doms["web1"].config)
    h2.start("web1")
    caught = r"one-host broken at t=3\.000: vm web1 runs on h1 and h2"
    with pytest.raises(InvariantViolated, match=caught):
        w.step()
    assert w.violations[0].invariant == "one-host"


def test_a_write_from_a_fenced_agent_is_caught() -> None:
    """The store refuses a fenced agent's writes; one that goes out without its fence (here
    written by hand, as a bug would) is the violation ``fenced-writer``."""
    w = World(replicas=0, strict=False)
    w.service.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    w.run(2)
    w.apply(f.PauseAgent("h1"))
    w.run(7)  # its lease expired while it was stopped
    agent = w.hosts["h1"].agent
    assert agent is not None and w.store.get(keys.ALIVE + "h1") is None
    status = w.store.get(keys.VMSTATUS + "web1")
    assert status is not None
    agent.store.commit([], [Put(status.key, status.value)])  # no fence: accepted
    w.step()
    [v] = w.violations
    assert v.invariant == "fenced-writer" and v.t == 10.0
    assert "agent h1 wrote /kumo/vmstatus/web1" in v.detail
    # with its fence, the same write is refused and nothing is violated
    w.apply(f.ResumeAgent("h1"))
    w.run(2)
    assert len(w.violations) == 1


def test_a_clean_reboot_freezes_the_hosts_vms_and_an_operators_fence_recovers_them() -> None:
    """Proxmox's "freeze": a host going down for a reboot shuts its VMs down and they wait
    for it (HA does not fence it); an operator who knows it will not come back fences it, and
    the fence wins. (tests/scenarios/ha/reboot-clean.yaml: the VM runs again on the host.)"""
    w = World(replicas=1)
    w.service.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    w.run(3)
    w.apply(f.Reboot("h1"))
    w.run(15)  # the lease is long gone, the grace too: a dead host would be fenced by now
    assert w.running_on("web1") == [] and w.store.get(keys.FENCED + "h1") is None
    assert w.store.get(keys.FROZEN + "h1") is not None
    w.apply(f.Fence("h1"))  # the operator: it will not come back soon
    w.run(3)
    assert w.running_on("web1") in (["h2"], ["h3"])
    w.run(10)  # h1 boots again: the VM stays where it was recovered, and runs once
    assert w.running_on("web1") in (["h2"], ["h3"]) and w.store.get(keys.FROZEN + "h1") is None


def test_the_virtual_clock_moves_only_with_the_world() -> None:
    w = World(replicas=1, start=100.0)
    assert w.clock.monotonic() == 100.0
    w.run(3)
    assert w.clock.monotonic() == 103.0 and w.clock.now() == 103.0
    assert [h.hv.guests() for h in w.hosts.values()] == [{}, {}, {}]
    assert DomainState.RUNNING.value == "running"
