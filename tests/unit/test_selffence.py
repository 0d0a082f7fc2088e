"""Self-fencing's peer check: when is the store down for everyone, and what an agent answers
its peers at the start of an outage (its lease still runs, its renewals fail)."""

from __future__ import annotations

import pytest

from kumo import faults as f
from kumo.agent.selffence import SelfFence, store_down_for_all
from kumo.clock import SYSTEM_CLOCK
from kumo.hypervisor.base import DomainState
from kumo.hypervisor.domain import DiskConfig, DomainConfig
from kumo.hypervisor.fake import FakeHypervisor
from kumo.server.schemas import VMCreate
from kumo.sim.world import World
from kumo.store.lease import LeaseKeeper
from kumo.store.memory import MemoryStore


@pytest.mark.parametrize(
    ("answers", "down"),
    [
        ([False, False], True),  # both peers lost the store too
        ([False, None], False),  # one of two: not a strict majority
        ([False, False, None], True),
        ([False, False, True], False),  # one holds a lease: etcd is there for it
        ([None, None], False),  # nobody answers: this host is the one cut off
        ([], False),
    ],
)
def test_the_store_is_down_for_all_when_most_peers_lost_it_and_none_holds(
    answers: list[bool | None], down: bool
) -> None:
    assert store_down_for_all(answers) is down


def test_an_agent_whose_renewals_fail_says_lost_while_its_lease_still_runs() -> None:
    w = World(replicas=1)
    w.service.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    w.run(2)
    agent = w.hosts["h2"].agent
    assert agent is not None and agent.lease_state() == "valid"
    w.apply(f.StoreDown())
    w.step(0.5)
    assert agent.keeper.valid and agent.lease_state() == "lost"
    w.apply(f.StoreUp())
    w.step(0.5)
    assert agent.lease_state() == "valid"


def test_staggered_deadlines_in_an_outage_still_hold() -> None:
    """h1 renews last before the outage half a second earlier than the others: it reaches its
    deadline first, asks its peers, hears they lost the store too, and holds."""
    w = World(replicas=1)
    w.service.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    w.run(2)
    h1 = w.hosts["h1"].agent
    assert h1 is not None
    h1.keeper.deadline -= 0.5  # as if its last renewal had started half a second sooner
    w.apply(f.StoreDown())
    w.run(10, tick=0.5)
    assert w.running_on("web1") == ["h1"]
    assert h1.self_fence.holding


def _fence_setup() -> tuple[SelfFence, FakeHypervisor]:
    hv = FakeHypervisor("h1")
    for i, ha in enumerate((True, True, True, False)):
        hv.define(
            DomainConfig(
                name=f"g{i}",
                uuid=f"00000000-0000-4000-8000-{i:012d}",
                domain_type="qemu",
                vcpus=1,
                memory_mib=128,
                disks=(DiskConfig(f"/pool/g{i}.qcow2"),),
                nics=(),
                ha=ha,
            )
        )
        hv.start(f"g{i}")
    keeper = LeaseKeeper(MemoryStore(), 5)
    return SelfFence("h1", keeper, hv, SYSTEM_CLOCK, lambda _p: None), hv


def test_a_self_fence_kills_the_ha_guests_before_it_asks_libvirt_anything() -> None:
    """libvirt's destroy waits for QEMU to end and cleans up, domain after domain: seconds
    each on a loaded host. The SIGKILL comes first, while every HA guest still runs, then
    the destroys; the guest that is not HA is left alone."""
    fence, hv = _fence_setup()
    seen: list[dict[str, DomainState]] = []

    def kill() -> list[str]:
        seen.append({d.name: d.state for d in hv.domains()})
        return ["g0", "g1", "g2"]

    fence.kill = kill
    done = fence.fence_now("test")
    assert seen == [{f"g{i}": DomainState.RUNNING for i in range(4)}]
    assert done is not None and done.domains == ("g0", "g1", "g2")
    states = {d.name: d.state for d in hv.domains()}
    assert states == {
        "g0": DomainState.SHUTOFF,
        "g1": DomainState.SHUTOFF,
        "g2": DomainState.SHUTOFF,
        "g3": DomainState.RUNNING,
    }


def test_a_self_fence_whose_libvirtd_is_gone_still_reports_the_guests_it_killed() -> None:
    fence, hv = _fence_setup()
    fence.kill = lambda: ["g1"]
    hv.up = False  # libvirtd away: listing domains fails
    done = fence.fence_now("test")
    assert done is not None and done.domains == ("g1",)
    assert fence.done == [done]


def test_a_self_fence_that_cannot_kill_still_destroys() -> None:
    fence, _ = _fence_setup()

    def kill() -> list[str]:
        raise PermissionError("/run/libvirt/qemu")

    fence.kill = kill
    done = fence.fence_now("test")
    assert done is not None and done.domains == ("g0", "g1", "g2")
