"""Which kumo domains on a host are strays (kumo.agent.strays): pure verdicts from what
libvirt shows and what the store says about each VM."""

from __future__ import annotations

import pytest

from kumo.agent.strays import Seen, Stray, Verdict, judge, strays
from kumo.hypervisor.base import Domain, DomainState

RUN = DomainState.RUNNING


def dom(state: DomainState = RUN, vm: str | None = "web1", name: str = "web1") -> Domain:
    return Domain(name, "6b756d6f-0000-4000-8000-000000000001", state, vm)


def test_a_domain_whose_vm_is_placed_on_another_host_is_stray() -> None:
    found = judge("h1", dom(), Seen("h2", 7))
    assert found == Stray("web1", "web1", Verdict.STRAY, "h2", running=True)
    assert found.message("h1") == "stray domain of web1 (placed on h2) stopped and undefined on h1"


@pytest.mark.parametrize(
    ("state", "running"),
    [
        (DomainState.SHUTOFF, False),
        (DomainState.CRASHED, False),
        (DomainState.PAUSED, True),
        (DomainState.OTHER, True),
    ],
)
def test_only_a_live_stray_needs_stopping(state: DomainState, running: bool) -> None:
    found = judge("h1", dom(state), Seen("h2", 7))
    assert found is not None and found.running is running
    if not running:
        assert found.message("h1") == "stray domain of web1 (placed on h2) undefined on h1"


def test_a_vm_placed_here_is_the_reconcile_loops() -> None:
    assert judge("h1", dom(), Seen("h1", 7)) is None


def test_domains_kumo_does_not_own_are_never_strays() -> None:
    assert judge("h1", dom(vm=None), Seen("h2", 7)) is None
    assert strays("h1", [dom(vm=None, name="other")], {}) == []


@pytest.mark.parametrize(
    "migration",
    [("h2", "h1"), ("h1", "h2")],
    ids=["incoming-here", "outgoing-from-here"],
)
def test_a_vm_migrating_to_or_from_this_host_is_not_stray(migration: tuple[str, str]) -> None:
    # during a live migration the domain exists on both hosts
    assert judge("h1", dom(DomainState.PAUSED), Seen("h2", 7, migration)) is None
    assert judge("h1", dom(), Seen("h2", 7, migration)) is None


def test_a_migration_between_two_other_hosts_does_not_excuse_a_copy_here() -> None:
    found = judge("h1", dom(), Seen("h2", 7, ("h2", "h3")))
    assert found is not None and found.verdict == Verdict.STRAY


def test_a_vm_this_hosts_migrator_is_moving_is_not_stray() -> None:
    assert judge("h1", dom(), Seen("h2", 7), moving=frozenset({"web1"})) is None


def test_a_placement_older_than_our_own_switch_over_is_not_trusted() -> None:
    # we moved web1 away at revision 9; a placement read at 7 predates it
    assert judge("h1", dom(), Seen("h2", 7), moved_away={"web1": 9}) is None
    found = judge("h1", dom(), Seen("h2", 12), moved_away={"web1": 9})
    assert found is not None and found.verdict == Verdict.STRAY


@pytest.mark.parametrize(
    ("seen", "why"),
    [
        (Seen(None), "is not placed anywhere"),
        (Seen(None, exists=False), "is not placed anywhere"),
        (Seen("h2", 7, exists=False), "is unknown"),
    ],
)
def test_a_vm_without_placement_or_spec_is_left_alone_and_reported(seen: Seen, why: str) -> None:
    found = judge("h1", dom(), seen)
    assert found is not None and found.verdict == Verdict.UNKNOWN
    assert found.message("h1") == (
        f"kumo domain web1 on h1: its VM web1 {why}; left alone "
        "(remove it with virsh if it is not wanted)"
    )


def test_strays_judges_every_kumo_domain_in_name_order() -> None:
    doms = [
        dom(name="web3", vm="web3"),
        dom(name="web1", vm="web1"),
        dom(name="web2", vm="web2"),
        dom(name="db", vm=None),
    ]
    seen = {"web1": Seen("h2", 3), "web2": Seen("h1", 4)}  # web3: not in the store at all
    assert [(s.vm, s.verdict) for s in strays("h1", doms, seen)] == [
        ("web1", Verdict.STRAY),
        ("web3", Verdict.UNKNOWN),
    ]
