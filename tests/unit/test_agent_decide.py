"""The agent's pure decisions for one VM (kumo.agent.decide): what to do from the spec, what
libvirt shows and the clock, and which state to report afterwards."""

from __future__ import annotations

import pytest

from kumo.agent.decide import RESUME_UNWATCHED_S, Action, Decision, Observed, decide, report
from kumo.hypervisor.base import Domain, DomainState, PauseReason
from kumo.model.host import PathState
from kumo.model.vm import Power, VMSpec, VMState
from kumo.sim.cluster import vm_spec

A = Action
NOW = 1000.0


def spec(**changes: object) -> VMSpec:
    return vm_spec("web1", **changes)


def dom(state: DomainState) -> Domain:
    return Domain("web1", spec().uuid, state, "web1")


def seen(
    state: DomainState | None = DomainState.RUNNING,
    disk: bool = True,
    reboot_done: int = 0,
    stop_since: float | None = None,
) -> Observed:
    return Observed(dom(state) if state else None, disk, reboot_done, stop_since)


def acts(s: VMSpec, o: Observed, now: float = NOW) -> tuple[Action, ...]:
    return decide(s, o, now).actions


# -- deleting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "disk", "expected"),
    [
        (DomainState.RUNNING, True, (A.DESTROY, A.UNDEFINE, A.DELETE_DISK, A.FORGET)),
        (DomainState.PAUSED, True, (A.DESTROY, A.UNDEFINE, A.DELETE_DISK, A.FORGET)),
        (DomainState.SHUTOFF, True, (A.UNDEFINE, A.DELETE_DISK, A.FORGET)),
        (DomainState.SHUTOFF, False, (A.UNDEFINE, A.FORGET)),
        (None, True, (A.DELETE_DISK, A.FORGET)),
        (None, False, (A.FORGET,)),
    ],
)
def test_deleting_removes_what_exists_in_order_then_forgets(
    state: DomainState | None, disk: bool, expected: tuple[Action, ...]
) -> None:
    assert acts(spec(deleting=True), seen(state, disk)) == expected


# -- desired running ---------------------------------------------------------------------


def test_a_new_vm_gets_its_disk_and_domain_before_it_starts() -> None:
    assert acts(spec(), seen(None, disk=False)) == (A.CREATE_DISK, A.DEFINE, A.START)
    assert acts(spec(), seen(None)) == (A.DEFINE, A.START)
    assert acts(spec(), seen(DomainState.SHUTOFF, disk=False)) == (A.CREATE_DISK, A.START)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (DomainState.SHUTOFF, (A.START,)),
        (DomainState.CRASHED, (A.START,)),  # a crashed guest is restarted
        (DomainState.RUNNING, ()),
        (DomainState.PAUSED, ()),  # a migration or an operator paused it: left alone
        (DomainState.OTHER, ()),
    ],
)
def test_desired_running_starts_an_off_or_crashed_domain_only(
    state: DomainState, expected: tuple[Action, ...]
) -> None:
    assert acts(spec(), seen(state)) == expected


def test_reboot_once_per_generation_acpi_or_hard_reset() -> None:
    assert acts(spec(reboot_generation=2), seen(reboot_done=1)) == (A.REBOOT,)
    assert acts(spec(reboot_generation=2, reboot_mode="reset"), seen(reboot_done=1)) == (A.RESET,)
    assert acts(spec(reboot_generation=2, reboot_mode="reset"), seen(reboot_done=2)) == ()
    assert acts(spec(reboot_generation=2), seen(reboot_done=3)) == ()
    # a domain that is not running boots anyway: start it, no reboot on top
    assert acts(spec(reboot_generation=2), seen(DomainState.SHUTOFF, reboot_done=1)) == (A.START,)


# -- desired stopped ---------------------------------------------------------------------


def test_stop_is_acpi_once_then_forced_off_at_the_timeout() -> None:
    s = spec(power=Power.STOPPED, stop_timeout_s=30)
    assert decide(s, seen(), NOW) == Decision((A.SHUTDOWN,))
    assert decide(s, seen(stop_since=NOW), NOW + 29.9) == Decision(())
    forced = decide(s, seen(stop_since=NOW), NOW + 30)
    assert forced.actions == (A.DESTROY,)
    assert forced.message == "the guest ignored the ACPI shutdown for 30 s: forced off"
    # a domain in a state libvirt does not name is stopped the same way
    assert acts(s, seen(DomainState.OTHER)) == (A.SHUTDOWN,)


def test_a_zero_timeout_forces_off_on_the_next_pass() -> None:
    s = spec(power=Power.STOPPED, stop_timeout_s=0)
    assert acts(s, seen()) == (A.SHUTDOWN,)
    assert acts(s, seen(stop_since=NOW), NOW) == (A.DESTROY,)


def test_a_forced_stop_powers_off_at_once_without_acpi() -> None:
    s = spec(power=Power.STOPPED, stop_mode="force")
    d = decide(s, seen(), NOW)
    assert d == Decision((A.DESTROY,), "powered off at once (forced stop), no ACPI shutdown")
    # even while an ACPI shutdown asked earlier is still within its timeout
    assert acts(s, seen(stop_since=NOW), NOW + 1) == (A.DESTROY,)
    assert acts(s, seen(None, disk=False)) == (A.CREATE_DISK, A.DEFINE)


@pytest.mark.parametrize(
    "state", [DomainState.SHUTOFF, DomainState.CRASHED, DomainState.PAUSED, None]
)
def test_desired_stopped_leaves_a_domain_that_is_not_running_alone(
    state: DomainState | None,
) -> None:
    expected = (A.DEFINE,) if state is None else ()
    for mode in ("acpi", "force"):
        assert acts(spec(power=Power.STOPPED, stop_mode=mode), seen(state)) == expected


# -- a drifted definition ---------------------------------------------------------------


def drifted(state: DomainState, want: str | None = "sha256:new") -> Observed:
    return Observed(Domain("web1", spec().uuid, state, "web1", "sha256:old"), True, 0, None, want)


def test_a_drifted_running_domain_is_defined_again_for_its_next_boot() -> None:
    d = decide(spec(), drifted(DomainState.RUNNING), NOW)
    assert d == Decision(
        (A.DEFINE,),
        "its definition drifted from the spec: defined again "
        "(the running guest gets it at its next boot)",
    )


def test_a_drifted_stopped_domain_is_defined_again_before_it_starts() -> None:
    d = decide(spec(), drifted(DomainState.SHUTOFF), NOW)
    assert d == Decision((A.DEFINE, A.START), "its definition drifted from the spec: defined again")
    crashed = decide(spec(), drifted(DomainState.CRASHED), NOW)
    assert crashed.actions == (A.DEFINE, A.START)
    assert crashed.message == (
        "its definition drifted from the spec: defined again; "
        "the guest crashed (its QEMU ended unexpectedly): started again"
    )


def test_no_drift_without_a_digest_to_compare_nor_when_deleting() -> None:
    assert acts(spec(), drifted(DomainState.RUNNING, want=None)) == ()
    assert acts(spec(), drifted(DomainState.RUNNING, want="sha256:old")) == ()
    assert A.DEFINE not in acts(spec(deleting=True), drifted(DomainState.RUNNING))


# -- the state reported ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (DomainState.RUNNING, VMState.RUNNING),
        (DomainState.PAUSED, VMState.PAUSED),
        (DomainState.CRASHED, VMState.CRASHED),
        (DomainState.SHUTOFF, VMState.STOPPED),
        (DomainState.OTHER, VMState.ERROR),
    ],
)
def test_report_maps_libvirt_states(state: DomainState, expected: VMState) -> None:
    assert report(spec(), dom(state), stop_pending=False) == expected


def test_report_stopping_only_while_a_shutdown_of_a_stopped_vm_is_pending() -> None:
    stopped = spec(power=Power.STOPPED)
    running = dom(DomainState.RUNNING)
    assert report(stopped, running, stop_pending=True) == VMState.STOPPING
    assert report(stopped, running, stop_pending=False) == VMState.RUNNING
    assert report(spec(), running, stop_pending=True) == VMState.RUNNING
    assert report(stopped, dom(DomainState.SHUTOFF), stop_pending=True) == VMState.STOPPED


def test_report_defining_and_deleting() -> None:
    assert report(spec(), None, stop_pending=False) == VMState.DEFINING
    assert report(spec(deleting=True), dom(DomainState.RUNNING), False) == VMState.DELETING
    assert report(spec(deleting=True), None, False) == VMState.DELETING


def test_a_restart_after_a_crash_says_why() -> None:
    assert decide(spec(), seen(DomainState.CRASHED), NOW).message == (
        "the guest crashed (its QEMU ended unexpectedly): started again"
    )
    assert decide(spec(), seen(DomainState.SHUTOFF), NOW).message == ""


@pytest.mark.parametrize("state", [DomainState.SHUTOFF, DomainState.CRASHED])
def test_a_held_failed_start_is_not_tried_again_until_the_leader_places_it_again(
    state: DomainState,
) -> None:
    held = Observed(dom(state), True, 0, None, start_held=True)
    assert acts(spec(), held) == ()
    assert acts(spec(), seen(state)) == (A.START,)


# -- paused on a storage I/O error (error_policy='stop') ---------------------------------


def io_paused(
    storage: PathState,
    since: float | None = NOW - 30,
    reason: PauseReason = PauseReason.IOERROR,
    path_since: float = NOW - 1,
) -> Observed:
    paused = Domain("web1", spec().uuid, DomainState.PAUSED, "web1", paused_reason=reason)
    return Observed(
        paused,
        True,
        0,
        None,
        storage=storage,
        storage_since=path_since,
        io_paused_since=since,
    )


def test_a_guest_paused_on_io_error_is_resumed_once_the_storage_path_is_up() -> None:
    d = decide(spec(), io_paused(PathState.UP, since=3600.0, path_since=3605.0), NOW + 3600)
    assert d.actions == (A.RESUME,)
    assert d.message == (
        "resumed after the storage path came back (paused on I/O error at 01:00:00 UTC)"
    )


def test_a_guest_paused_before_the_pings_saw_the_nas_go_is_not_resumed_at_once() -> None:
    """Paused at NOW-2 while the path has been up since NOW-100: the pings have not missed
    enough yet; resuming would pause again. Retried only after RESUME_UNWATCHED_S."""
    early = io_paused(PathState.UP, since=NOW - 2, path_since=NOW - 100)
    assert decide(spec(), early, NOW) == Decision(
        (), "paused: storage I/O error, waiting for the NAS"
    )
    late = io_paused(PathState.UP, since=NOW - RESUME_UNWATCHED_S, path_since=NOW - 100)
    assert decide(spec(), late, NOW).actions == (A.RESUME,)


def test_a_guest_paused_on_io_error_stays_paused_while_the_storage_path_is_down() -> None:
    d = decide(spec(), io_paused(PathState.DOWN), NOW)
    assert d == Decision((), "paused: storage I/O error, waiting for the NAS")
    assert report(spec(), io_paused(PathState.DOWN).domain, False) == VMState.PAUSED


def test_with_no_nas_to_watch_a_guest_paused_on_io_error_is_resumed_after_a_while() -> None:
    """Unknown storage path (no NAS address, or not judged yet): a resume every 10 s at
    most; a guest whose storage is still gone pauses again and loses nothing."""
    assert acts(spec(), io_paused(PathState.UNKNOWN, since=NOW - RESUME_UNWATCHED_S + 1)) == ()
    assert acts(spec(), io_paused(PathState.UNKNOWN, since=None)) == ()  # just seen paused
    waited = decide(spec(), io_paused(PathState.UNKNOWN, since=NOW - RESUME_UNWATCHED_S), NOW)
    assert waited.actions == (A.RESUME,) and "no NAS address to ping" in waited.message


@pytest.mark.parametrize("reason", [PauseReason.USER, PauseReason.MIGRATION, None])
def test_a_guest_paused_for_another_reason_is_left_alone(reason: PauseReason | None) -> None:
    paused = Domain("web1", spec().uuid, DomainState.PAUSED, "web1", paused_reason=reason)
    for storage in PathState:
        assert decide(spec(), Observed(paused, True, 0, None, storage=storage), NOW) == Decision(())


def test_a_stopped_vm_paused_on_io_error_is_not_resumed() -> None:
    assert A.RESUME not in acts(spec(power=Power.STOPPED), io_paused(PathState.UP))
