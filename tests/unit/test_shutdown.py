"""The agent stopped by systemd: a reboot freezes the host's VMs (agent/shutdown.py); any
other stop leaves them running."""

from __future__ import annotations

from kumo.agent.shutdown import on_stop, rebooting
from kumo.hypervisor.base import DomainState
from kumo.server.schemas import VMCreate
from kumo.sim.world import World
from kumo.store import keys

REBOOT_JOBS = """\
 1 reboot.target            start waiting
 7 systemd-reboot.service   start waiting
42 kumo-agent.service       stop  running
"""
POWEROFF_JOBS = """\
 1 poweroff.target          start waiting
42 kumo-agent.service       stop  running
"""


def test_a_reboot_is_told_from_a_power_off_and_a_restart() -> None:
    assert rebooting(REBOOT_JOBS)
    assert not rebooting(POWEROFF_JOBS)
    assert not rebooting("42 kumo-agent.service restart running\n")
    assert not rebooting("")  # systemd did not answer: not a reboot


def _world() -> World:
    w = World(replicas=1)
    w.service.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    w.run(3)
    return w


def test_stopped_for_a_reboot_the_agent_freezes_and_waits_for_its_guests() -> None:
    w = _world()
    agent = w.hosts["h1"].agent
    assert agent is not None
    slept: list[float] = []
    asked = on_stop(agent, jobs=lambda: REBOOT_JOBS, sleep=slept.append, wait_s=5)
    assert asked == ["web1"]
    assert [d.state for d in w.hosts["h1"].hv.domains()] == [DomainState.SHUTOFF]
    assert w.store.get(keys.FROZEN + "h1") is not None
    agent.run_once()  # frozen: it starts nothing more
    assert [d.state for d in w.hosts["h1"].hv.domains()] == [DomainState.SHUTOFF]


def test_stopped_for_anything_else_the_agent_leaves_its_guests_running() -> None:
    w = _world()
    agent = w.hosts["h1"].agent
    assert agent is not None
    assert on_stop(agent, jobs=lambda: POWEROFF_JOBS) == []
    assert w.running_on("web1") == ["h1"] and w.store.get(keys.FROZEN + "h1") is None
