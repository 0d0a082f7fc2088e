"""High availability in the simulator: the real agents (self-fencing, the watchdog) and the
real leader (fencing, recovery, rejoining) on a virtual clock. The world checks on every tick
that no VM runs on two hosts (``strict``: the first violation fails the test)."""

from __future__ import annotations

from kumo import faults as f
from kumo.model.ha import FencedHost, HASettings, HAStatus, RecoveryState
from kumo.model.vm import Migration, VMStatus
from kumo.server.schemas import HAPolicy, VMCreate
from kumo.sim.world import World
from kumo.store import keys
from kumo.store.records import load, put


def vm(w: World, name: str, host: str, memory: int = 128, **ha: object) -> None:
    w.service.create_vm(
        VMCreate(
            name=name, image="img", memory_mib=memory, host=host, ha=HAPolicy.model_validate(ha)
        ),
        "t",
    )


def events(w: World, action: str) -> list[str]:
    return [line for line in w.log if f" {action}" in line and "event " in line]


def fenced(w: World, host: str) -> FencedHost | None:
    found = load(w.store, FencedHost, keys.FENCED + host)
    return found[0] if found else None


def first(w: World, text: str) -> float:
    """The virtual time of the first log line holding ``text``."""
    line = next(line for line in w.log if text in line)
    return float(line.split()[0].removeprefix("t="))


def test_a_dead_hosts_ha_vms_run_elsewhere_within_ten_seconds_and_ha_off_ones_stay_down() -> None:
    w = World(replicas=2)
    vm(w, "web1", "h1")
    vm(w, "web2", "h1", mode="off")
    vm(w, "db1", "h2")
    w.run(3)
    assert w.running_on("web1") == w.running_on("web2") == ["h1"]
    w.apply(f.PowerOff("h1"))
    t0 = w.clock.monotonic()
    while w.running_on("web1") == [] and w.clock.monotonic() - t0 < 30:
        w.step(0.5)
    took = w.clock.monotonic() - t0
    assert w.running_on("web1") in (["h2"], ["h3"]) and took <= 10, took
    assert w.running_on("web2") == [] and w.running_on("db1") == ["h2"]
    rec = fenced(w, "h1")
    assert rec is not None and "no agent lease for 2 s" in rec.reason
    [recovered] = events(w, "recovered")
    assert "vm/web1" in recovered and "host h1 fenced at" in recovered
    w.run(30)
    assert len(w.running_on("web1")) == 1 and w.running_on("web2") == []


def test_a_host_cut_from_the_store_destroys_its_ha_vms_before_they_run_elsewhere() -> None:
    w = World(replicas=1)
    vm(w, "web1", "h1")
    vm(w, "web2", "h1", mode="off")
    w.run(3)
    w.apply(f.Partition("h1"))
    w.run(15)
    [where] = w.running_on("web1")
    assert where != "h1"
    assert w.running_on("web2") == ["h1"]  # HA off: left alone, never moved
    destroyed = first(w, "h1 web1: running -> shutoff")
    started = first(w, f"{where} web1: none -> running")
    assert destroyed < first(w, "fenced") <= started  # fenced and placed in one pass
    w.apply(f.Heal("h1"))
    w.run(5)
    assert fenced(w, "h1") is None  # it holds a lease again
    assert w.running_on("web1") == [where] and w.running_on("web2") == ["h1"]
    assert any("self-fenced" in line and "destroyed web1" in line for line in w.log)


def test_the_store_down_for_everyone_stops_nothing() -> None:
    """Every host loses its lease at once: no host can be fenced nor a VM run elsewhere, so
    the agents hold (their peers say they lost the store too) and nothing is killed."""
    w = World(replicas=1)
    for i, h in enumerate(("h1", "h2", "h3")):
        vm(w, f"v{i}", h)
    w.run(3)
    before = {v: w.running_on(v) for v in ("v0", "v1", "v2")}
    w.apply(f.StoreDown())
    w.run(20)
    assert {v: w.running_on(v) for v in before} == before
    w.apply(f.StoreUp())
    w.run(10)
    assert {v: w.running_on(v) for v in before} == before
    assert not any(fenced(w, h) for h in ("h1", "h2", "h3"))
    assert not events(w, "self-fenced")


def test_when_room_is_short_priority_decides_and_the_rest_wait_recovering() -> None:
    w = World([("h1", 4, 1024), ("h2", 4, 1024)], replicas=1)
    vm(w, "low", "h1", memory=400, priority=1)
    vm(w, "high", "h1", memory=400, priority=100)
    vm(w, "filler", "h2", memory=500, mode="off")
    w.run(3)
    w.apply(f.PowerOff("h1"))
    w.run(15)
    assert w.running_on("high") == ["h2"] and w.running_on("low") == []
    status = load(w.store, HAStatus, keys.HA + "low")
    assert status is not None and status[0].state == RecoveryState.RECOVERING
    assert "not enough free memory" in status[0].reason
    shown = w.service.vm("low")
    assert shown.state == "recovering" and "not enough free memory" in shown.message
    w.apply(f.PowerOn("h1"))
    w.run(5)
    assert w.running_on("low") == ["h1"]  # still placed there: runs again once unfenced
    assert load(w.store, HAStatus, keys.HA + "low") is None


def test_a_killed_agent_is_covered_by_the_watchdog() -> None:
    """QEMU outlives a killed agent: the host's watchdog, no longer fed, kills the HA guests
    before the leader can fence the host (else the VM would run twice: the world would
    fail the test)."""
    w = World(replicas=1)
    vm(w, "web1", "h1")
    vm(w, "web2", "h1", mode="off")
    w.run(3)
    w.apply(f.KillAgent("h1"))
    w.run(15)
    [where] = w.running_on("web1")
    assert where != "h1" and w.running_on("web2") == ["h1"]
    assert first(w, "h1 watchdog: agent silent; killed web1") < first(w, "fenced")


def test_a_stopped_agent_is_covered_by_the_watchdog_and_rejoins() -> None:
    w = World(replicas=1)
    vm(w, "web1", "h1")
    w.run(3)
    w.apply(f.PauseAgent("h1"))
    w.run(15)
    [where] = w.running_on("web1")
    assert where != "h1"
    w.apply(f.ResumeAgent("h1"))
    w.run(5)
    assert fenced(w, "h1") is None and w.running_on("web1") == [where]


def test_a_quick_agent_restart_disturbs_nothing() -> None:
    w = World(replicas=1)
    vm(w, "web1", "h1")
    w.run(3)
    w.apply(f.KillAgent("h1"))
    w.run(1)
    w.apply(f.RestartAgent("h1"))
    w.run(15)
    assert w.running_on("web1") == ["h1"]
    assert fenced(w, "h1") is None and not events(w, "recovered")
    assert not any("web1: running -> " in line for line in w.log)


def test_recovery_keeps_allowed_hosts_and_prefers_the_preferred_one() -> None:
    w = World(("h1", "h2", "h3", "h4"), replicas=1)
    vm(w, "a", "h1", hosts=["h1", "h4"])
    vm(w, "b", "h1", preferred="h3")
    vm(w, "c", "h1", hosts=["h1"])
    w.run(3)
    w.apply(f.PowerOff("h1"))
    w.run(15)
    assert w.running_on("a") == ["h4"] and w.running_on("b") == ["h3"]
    assert w.running_on("c") == []
    status = load(w.store, HAStatus, keys.HA + "c")
    assert status is not None and "none of its allowed hosts (h1)" in status[0].reason


def test_the_same_failover_gives_the_same_log() -> None:
    def run() -> list[str]:
        w = World(replicas=2, seed=3)
        vm(w, "web1", "h1")
        vm(w, "web2", "h2")
        w.run(3)
        w.apply(f.Partition("h1"))
        w.run(12)
        w.apply(f.Heal("h1"))
        w.run(5)
        return w.log

    one, two = run(), run()
    assert one == two and any("recovered" in line for line in one)


# -- failed starts (Proxmox's policy: retry max_restart times, relocate max_relocate times) --
def starts_left(w: World, vm: str, host: str) -> int:
    """How many of the starts made to fail on ``host`` have not been tried yet."""
    return w.hosts[host].hv.start_failures.get(vm, 0)


def test_a_failed_start_is_retried_once_on_its_host_then_the_vm_moves() -> None:
    w = World(replicas=1)
    w.apply(f.StartFails("a", "h1", 5))
    vm(w, "a", "h1")
    w.run(10)
    [where] = w.running_on("a")
    assert where != "h1"
    # the first start and the one retry the leader asked for; the agent tried no more
    assert starts_left(w, "a", "h1") == 3
    [retry] = events(w, "start-retry")
    assert "start failed on h1" in retry and "retrying on h1 (1 of 1)" in retry
    [moved] = events(w, "relocated")
    assert f"placed on {where}" in moved
    assert load(w.store, HAStatus, keys.HA + "a") is None  # it runs: the counts are gone
    assert w.service.vm("a").state == "running"


def test_starts_failing_everywhere_end_in_error_and_the_agent_stops_trying() -> None:
    w = World(("h1", "h2"), replicas=1)
    for h in ("h1", "h2"):
        w.apply(f.StartFails("a", h, 50))
    vm(w, "a", "h1", max_restart=2, max_relocate=1)
    w.run(10)
    assert w.running_on("a") == []
    assert (starts_left(w, "a", "h1"), starts_left(w, "a", "h2")) == (47, 47)
    rec = load(w.store, HAStatus, keys.HA + "a")
    assert rec is not None and rec[0].state == RecoveryState.ERROR and rec[0].tried == ("h1", "h2")
    shown = w.service.vm("a")
    assert shown.state == "error" and "start failed on h2" in shown.message
    assert "gave up" in shown.message
    w.run(20)
    assert (starts_left(w, "a", "h1"), starts_left(w, "a", "h2")) == (47, 47)
    w.apply(f.KillAgent("h2"))  # a new agent reads the failed start from the store
    w.run(1)
    w.apply(f.RestartAgent("h2"))
    w.run(5)
    assert starts_left(w, "a", "h2") == 47
    # the operator's stop forgets the error; a start is a fresh one
    w.hosts["h2"].hv.start_failures["a"] = 0
    w.service.power("a", "stop", False, "t")
    w.run(3)
    assert load(w.store, HAStatus, keys.HA + "a") is None
    w.service.power("a", "start", False, "t")
    w.run(3)
    assert w.running_on("a") == ["h2"]


def test_no_other_host_to_move_to_is_an_error_with_the_reason() -> None:
    w = World(("h1", "h2"), replicas=1)
    w.apply(f.StartFails("a", "h1", 50))
    vm(w, "a", "h1", hosts=["h1"], max_restart=0)
    w.run(10)
    shown = w.service.vm("a")
    assert shown.state == "error" and "no other host can take it" in shown.message
    assert starts_left(w, "a", "h1") == 49


def test_a_vm_without_ha_is_started_again_every_pass_as_before() -> None:
    w = World(replicas=1)
    w.apply(f.StartFails("b", "h1", 3))
    vm(w, "b", "h1", mode="off")
    w.run(10)
    assert w.running_on("b") == ["h1"] and starts_left(w, "b", "h1") == 0
    assert not events(w, "start-retry") and not events(w, "relocated")
    status = load(w.store, VMStatus, keys.VMSTATUS + "b")
    assert status is not None and status[0].start_failed == 0


# -- failback ------------------------------------------------------------------------------
def failback_world(stabilisation_s: float) -> World:
    w = World(("h1", "h2"), replicas=1)
    w.store.commit([], [put(keys.HA_SETTINGS, HASettings(stabilisation_s=stabilisation_s))])
    vm(w, "a", "h1", preferred="h1", failback=True)
    vm(w, "b", "h1", preferred="h1")  # no failback: stays where HA put it
    w.run(3)
    w.apply(f.PowerOff("h1"))
    w.run(15)
    assert w.running_on("a") == w.running_on("b") == ["h2"]
    return w


def test_failback_waits_for_the_stabilisation_period_then_migrates_live() -> None:
    w = failback_world(20)
    w.apply(f.PowerOn("h1"))
    back = w.clock.monotonic()
    w.run(15)
    assert w.running_on("a") == ["h2"] and not events(w, "failback")
    w.run(15)
    assert w.running_on("a") == ["h1"] and w.running_on("b") == ["h2"]
    [why] = events(w, "failback")
    assert "vm/a" in why and "by live migration" in why
    assert 20 <= first(w, "failback") - back <= 22
    assert [h for t, h, v in w.boots if v == "a" and t >= back] == []  # moved live: no boot


def test_failback_waits_while_its_host_cannot_take_the_vm() -> None:
    w = failback_world(5)
    w.apply(f.PowerOn("h1"))
    w.run(2)
    w.service.migrations.maintenance("h1", "enter", False, "t")
    w.run(15)
    assert w.running_on("a") == ["h2"] and not events(w, "failback")
    w.service.migrations.maintenance("h1", "exit", False, "t")
    w.run(3)
    assert w.running_on("a") == ["h2"]  # up again: the period counts anew
    w.run(6)
    assert w.running_on("a") == ["h1"]
    assert load(w.store, Migration, keys.MIGRATIONS + "a") is None
