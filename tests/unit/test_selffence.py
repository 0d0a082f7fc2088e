"""Self-fencing's peer check: when is the store down for everyone, and what an agent answers
its peers at the start of an outage (its lease still runs, its renewals fail)."""

from __future__ import annotations

import pytest

from kumo import faults as f
from kumo.agent.selffence import store_down_for_all
from kumo.server.schemas import VMCreate
from kumo.sim.world import World


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
