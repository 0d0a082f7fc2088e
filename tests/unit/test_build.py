"""The build state machine of a network install (kumo.provision.build)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kumo.provision.build import (
    DEFAULT_TIMEOUTS,
    ORDER,
    Accepted,
    Build,
    Refused,
    Signal,
    SignalKind,
    Stage,
    StageProgress,
    callback,
    deadline,
    new_build,
    observe,
    progress,
    reinstall,
    step,
    transition_line,
    wants_installer,
)

K = SignalKind
MAC = "52:54:00:12:34:56"
TOKEN = "t0ken-one"
T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC).timestamp()  # 12:00:00 UTC


def sig(kind: SignalKind, dt: float, detail: str = "") -> Signal:
    return Signal(kind=kind, at=T0 + dt, detail=detail)


def fresh() -> Build:
    return new_build("web1", MAC, TOKEN, T0)


def accepted(result: Accepted | Refused) -> Build:
    assert isinstance(result, Accepted), result
    return result.build


def feed(build: Build, *signals: tuple[SignalKind, float]) -> Build:
    for kind, dt in signals:
        build = observe(build, sig(kind, dt))
    return build


def to_installing() -> Build:
    """A build whose answer file was fetched at 12:00:10."""
    b = feed(
        fresh(),
        (K.DOMAIN_STARTED, 1),
        (K.DHCP, 2),
        (K.BOOT_SCRIPT, 3),
        (K.KERNEL, 4),
        (K.INITRD, 5),
        (K.ANSWER_FILE, 10),
    )
    assert b.stage == Stage.INSTALLING
    return b


def test_the_happy_path_passes_every_stage_in_order_with_its_time() -> None:
    b = fresh()
    assert b.stage == Stage.DEFINED and b.entered == {Stage.DEFINED: T0}
    steps = [
        (K.DOMAIN_STARTED, 1, Stage.DHCP),
        (K.DHCP, 2, Stage.BOOT_SCRIPT),
        (K.BOOT_SCRIPT, 3, Stage.KERNEL),
        (K.KERNEL, 4, Stage.KERNEL),  # the initrd still to come
        (K.INITRD, 5, Stage.ANSWER_FILE),
        (K.ANSWER_FILE, 10, Stage.INSTALLING),
    ]
    for kind, dt, stage in steps:
        b = observe(b, sig(kind, dt))
        assert b.stage == stage, kind
    b = accepted(callback(b, TOKEN, T0 + 100))
    assert b.stage == Stage.CALLBACK
    b = observe(b, sig(K.DOMAIN_REBOOTED, 105))
    assert b.stage == Stage.LOCAL_BOOT
    b = observe(b, sig(K.HEARTBEAT, 130, "ssh port 22 open"))
    assert b.stage == Stage.READY
    assert b.implied == () and b.reason == "" and b.failed_stage is None
    offsets = {s: t - T0 for s, t in b.entered.items()}
    assert offsets == {
        Stage.DEFINED: 0,
        Stage.DHCP: 1,
        Stage.BOOT_SCRIPT: 2,
        Stage.KERNEL: 3,
        Stage.ANSWER_FILE: 5,
        Stage.INSTALLING: 10,
        Stage.CALLBACK: 100,
        Stage.LOCAL_BOOT: 105,
        Stage.READY: 130,
    }
    assert b.last == sig(K.HEARTBEAT, 130, "ssh port 22 open")
    assert deadline(b) is None and step(b, T0 + 10**6) == b


def test_progress_lists_every_stage_with_start_duration_and_status() -> None:
    b = observe(to_installing(), sig(K.HEARTBEAT, 20))  # recorded only: no callback yet
    rows = progress(b)
    assert [r.stage for r in rows] == list(ORDER)
    assert rows[0] == StageProgress(Stage.DEFINED, T0, 1.0, "done")
    assert rows[4] == StageProgress(Stage.ANSWER_FILE, T0 + 5, 5.0, "done")
    assert rows[5] == StageProgress(Stage.INSTALLING, T0 + 10, None, "running")
    assert [r.status for r in rows[6:]] == ["pending"] * 3
    assert all(r.started_at is None and r.duration is None for r in rows[6:])

    failed = step(b, T0 + 10 + 1801)
    rows = progress(failed)
    assert rows[5] == StageProgress(Stage.INSTALLING, T0 + 10, 1801.0, "failed")
    assert rows[4].status == "done" and rows[6].status == "pending"


def test_the_answer_file_fetched_before_dhcp_was_seen_passes_the_skipped_stages() -> None:
    b = feed(fresh(), (K.DOMAIN_STARTED, 1), (K.ANSWER_FILE, 8))
    assert b.stage == Stage.INSTALLING
    assert b.implied == (Stage.DHCP, Stage.BOOT_SCRIPT, Stage.KERNEL)  # answer-file: seen
    for s in (Stage.BOOT_SCRIPT, Stage.KERNEL, Stage.ANSWER_FILE, Stage.INSTALLING):
        assert b.entered[s] == T0 + 8
    statuses = [r.status for r in progress(b)]
    assert statuses[:6] == ["done", "implied", "implied", "implied", "done", "running"]
    # dnsmasq's log arrives late: recorded, no regression
    late = observe(b, sig(K.DHCP, 2, "DHCPDISCOVER"))
    assert late.stage == Stage.INSTALLING and late.entered == b.entered
    assert late.seen[K.DHCP] == T0 + 2
    assert late.last == b.last  # not the newest signal


def test_the_initrd_before_the_kernel_completes_the_kernel_stage_too() -> None:
    b = feed(fresh(), (K.BOOT_SCRIPT, 3), (K.INITRD, 4))
    assert b.stage == Stage.KERNEL
    assert b.implied == (Stage.DEFINED, Stage.DHCP)
    assert observe(b, sig(K.KERNEL, 5)).stage == Stage.ANSWER_FILE


def test_a_heartbeat_after_the_callback_implies_the_reboot() -> None:
    b = accepted(callback(to_installing(), TOKEN, T0 + 50))
    b = observe(b, sig(K.HEARTBEAT, 80))
    assert b.stage == Stage.READY and b.implied == (Stage.CALLBACK,)


@pytest.mark.parametrize("kind", [K.DOMAIN_REBOOTED, K.DOMAIN_POWERED_OFF, K.HEARTBEAT])
def test_nothing_but_the_callback_passes_installing(kind: SignalKind) -> None:
    b = to_installing()
    after = observe(b, sig(kind, 60))
    assert after.stage == Stage.INSTALLING and after.entered == b.entered
    assert after.last == sig(kind, 60)  # recorded: it shows in a timeout's reason


def test_a_second_dhcp_after_the_reboot_is_only_recorded() -> None:
    b = accepted(callback(to_installing(), TOKEN, T0 + 50))
    b = observe(b, sig(K.DOMAIN_REBOOTED, 55))
    again = feed(b, (K.DHCP, 57), (K.BOOT_SCRIPT, 58))
    assert again.stage == Stage.LOCAL_BOOT and again.entered == b.entered
    assert again.seen[K.DHCP] == T0 + 2  # the first one
    assert again.last == sig(K.BOOT_SCRIPT, 58)


def test_a_signal_older_than_the_current_stage_is_only_recorded() -> None:
    b = feed(fresh(), (K.DOMAIN_STARTED, 10))  # in dhcp since 12:00:10
    stale = observe(b, sig(K.ANSWER_FILE, 5))
    assert stale.stage == Stage.DHCP and stale.entered == b.entered
    assert stale.seen[K.ANSWER_FILE] == T0 + 5


@pytest.mark.parametrize(
    ("signals", "reason"),
    [
        ([], "defined: the domain did not start within 120 s"),
        (
            [(K.DOMAIN_STARTED, 0)],
            f"dhcp: no DHCP request from {MAC} within 60 s "
            "(last seen: domain started at 12:00:00 UTC)",
        ),
        (
            [(K.DHCP, 0)],
            f"boot-script: no request for /boot/{MAC} within 30 s "
            "(last seen: DHCP request at 12:00:00 UTC)",
        ),
        (
            [(K.BOOT_SCRIPT, 0)],
            "kernel: no request for the kernel or the initrd within 60 s "
            "(last seen: boot script fetched at 12:00:00 UTC)",
        ),
        (
            [(K.BOOT_SCRIPT, 0), (K.KERNEL, 1)],
            "kernel: no request for the initrd within 60 s "
            "(last seen: kernel fetched at 12:00:01 UTC)",
        ),
        (
            [(K.BOOT_SCRIPT, 0), (K.INITRD, 1)],
            "kernel: no request for the kernel within 60 s "
            "(last seen: initrd fetched at 12:00:01 UTC)",
        ),
        (
            [(K.KERNEL, 0), (K.INITRD, 0)],
            "answer-file: no request for the answer file within 60 s "
            "(last seen: initrd fetched at 12:00:00 UTC)",
        ),
        (
            [(K.ANSWER_FILE, 3)],
            "installing: no callback within 1800 s "
            "(last seen: answer file fetched at 12:00:03 UTC)",
        ),
    ],
)
def test_each_stage_times_out_naming_the_stage_and_what_was_last_seen(
    signals: list[tuple[SignalKind, float]], reason: str
) -> None:
    b = feed(fresh(), *signals)
    stage = b.stage
    due = deadline(b)
    assert due == b.entered[stage] + DEFAULT_TIMEOUTS[stage]
    assert step(b, due) == b  # not yet: exactly at the deadline is within it
    failed = step(b, due + 1)
    assert failed.stage == Stage.FAILED and failed.failed_stage == stage
    assert failed.reason == reason
    assert failed.entered[Stage.FAILED] == due + 1


def test_the_stages_after_the_callback_time_out_too() -> None:
    b = accepted(callback(to_installing(), TOKEN, T0 + 50))
    failed = step(b, T0 + 50 + 301)
    assert failed.failed_stage == Stage.CALLBACK
    assert failed.reason == (
        "callback: the domain did not reboot or power off within 300 s "
        "(last seen: callback at 12:00:50 UTC)"
    )
    b = observe(b, sig(K.DOMAIN_POWERED_OFF, 60))
    failed = step(observe(b, sig(K.DHCP, 70)), T0 + 60 + 301)
    assert failed.failed_stage == Stage.LOCAL_BOOT
    assert failed.reason == (
        "local-boot: no heartbeat or SSH from the installed system within 300 s "
        "(last seen: DHCP request at 12:01:10 UTC)"
    )


def test_timeouts_are_overridable_per_build_and_checked() -> None:
    b = new_build("web1", MAC, TOKEN, T0, timeouts={Stage.DEFINED: 5})
    assert b.timeouts[Stage.DEFINED] == 5 and b.timeouts[Stage.DHCP] == 60
    assert step(b, T0 + 6).reason == "defined: the domain did not start within 5 s"
    with pytest.raises(ValueError, match=r"timeouts\.dhcp"):
        new_build("web1", MAC, TOKEN, T0, timeouts={Stage.DHCP: 0})
    with pytest.raises(ValueError, match="'ready' has no timeout"):
        new_build("web1", MAC, TOKEN, T0, timeouts={Stage.READY: 10})
    with pytest.raises(ValueError, match="token"):
        new_build("web1", MAC, "", T0)


def test_a_signal_after_the_deadline_cannot_rescue_the_build() -> None:
    b = feed(fresh(), (K.DOMAIN_STARTED, 0))
    late = observe(b, sig(K.DHCP, 61))
    assert late.stage == Stage.FAILED and late.failed_stage == Stage.DHCP
    assert late.reason.startswith(f"dhcp: no DHCP request from {MAC} within 60 s")


def test_an_answer_file_that_fails_to_render_fails_the_build_at_answer_file() -> None:
    b = feed(fresh(), (K.DOMAIN_STARTED, 1), (K.DHCP, 2), (K.BOOT_SCRIPT, 3))
    failed = observe(b, sig(K.ANSWER_FILE_ERROR, 6, "'ssh_keys' is undefined"))
    assert failed.stage == Stage.FAILED and failed.failed_stage == Stage.ANSWER_FILE
    assert failed.reason == "answer-file: answer file failed to render: 'ssh_keys' is undefined"
    assert failed.implied == (Stage.KERNEL,)
    assert not wants_installer(failed)
    # once served, a later render failure (a retry) is only recorded
    b = to_installing()
    assert observe(b, sig(K.ANSWER_FILE_ERROR, 20, "x")).stage == Stage.INSTALLING


def test_a_callback_with_a_wrong_token_is_refused_and_changes_nothing() -> None:
    b = to_installing()
    result = callback(b, "forged", T0 + 50)
    assert result == Refused("vm web1 build 1: wrong callback token")
    assert b.stage == Stage.INSTALLING and K.CALLBACK not in b.seen


def test_a_second_callback_is_refused() -> None:
    once = accepted(callback(to_installing(), TOKEN, T0 + 50))
    assert once.stage == Stage.CALLBACK
    result = callback(once, TOKEN, T0 + 51)
    assert result == Refused("vm web1 build 1: the callback token was already used at 12:00:50 UTC")


def test_a_callback_cannot_be_smuggled_in_as_a_plain_signal() -> None:
    with pytest.raises(ValueError, match="callback"):
        observe(to_installing(), sig(K.CALLBACK, 50))


def test_a_callback_after_the_install_timed_out_is_refused() -> None:
    b = to_installing()
    result = callback(b, TOKEN, T0 + 10 + 1801)
    assert isinstance(result, Refused)
    assert result.reason == (
        "vm web1 build 1: too late, installing: no callback within 1800 s "
        "(last seen: answer file fetched at 12:00:10 UTC)"
    )
    failed = step(b, T0 + 3000)
    assert isinstance(callback(failed, TOKEN, T0 + 3001), Refused)


def test_a_stale_callback_still_counts_from_the_current_stage() -> None:
    b = to_installing()
    after = accepted(callback(b, TOKEN, T0 + 9))  # the HTTP layer's clock a little behind
    assert after.stage == Stage.CALLBACK and after.entered[Stage.CALLBACK] == T0 + 10


def test_a_reinstall_is_a_new_generation_in_defined_with_a_new_token() -> None:
    old = step(to_installing(), T0 + 5000)
    assert old.stage == Stage.FAILED
    new = reinstall(old, "t0ken-two", T0 + 6000)
    assert new.generation == 2 and new.stage == Stage.DEFINED
    assert new.entered == {Stage.DEFINED: T0 + 6000}
    assert new.seen == {} and new.last is None and new.reason == "" and new.implied == ()
    assert (new.vm, new.mac, new.timeouts) == (old.vm, old.mac, old.timeouts)
    assert wants_installer(new)
    assert isinstance(callback(new, TOKEN, T0 + 6001), Refused)  # the old token is dead
    assert transition_line(old, new) == "vm web1: build 2: failed -> defined (reinstall)"


def test_the_boot_script_is_the_installer_until_the_callback_then_the_disk() -> None:
    b = to_installing()
    assert wants_installer(fresh()) and wants_installer(b)
    after = accepted(callback(b, TOKEN, T0 + 50))
    assert not wants_installer(after)


def test_each_change_of_stage_logs_one_line() -> None:
    b = feed(fresh(), (K.DOMAIN_STARTED, 1))
    after = observe(b, sig(K.ANSWER_FILE, 8))
    assert transition_line(b, after) == (
        "vm web1: build 1: dhcp -> installing "
        "(at=12:00:08 UTC, signal=answer-file, implied=dhcp,boot-script,kernel)"
    )
    assert transition_line(after, observe(after, sig(K.DHCP, 9))) is None
    failed = step(after, T0 + 8 + 1801)
    line = transition_line(after, failed)
    assert line is not None
    assert line.startswith("vm web1: build 1: installing -> failed (at=12:30:09 UTC, reason=")


def test_a_build_survives_a_json_round_trip_and_hides_its_token_from_repr() -> None:
    b = observe(accepted(callback(to_installing(), TOKEN, T0 + 50)), sig(K.DHCP, 51, "lease"))
    assert Build.model_validate_json(b.model_dump_json()) == b
    assert TOKEN not in repr(b)


# --- properties -------------------------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("signal"), st.sampled_from([k for k in K if k != K.CALLBACK])),
    st.tuples(st.just("callback"), st.sampled_from([TOKEN, "forged"])),
    st.tuples(st.just("step"), st.none()),
)
_ops = st.lists(st.tuples(_op, st.floats(min_value=-30, max_value=400)), max_size=40)


def _rank(b: Build) -> int:
    return len(ORDER) if b.stage == Stage.FAILED else ORDER.index(b.stage)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_no_sequence_of_signals_moves_a_build_backwards_or_revives_it(
    ops: list[tuple[tuple[str, object], float]],
) -> None:
    b = fresh()
    now = T0
    for (what, arg), dt in ops:
        now += dt  # sometimes backwards: sources' times arrive out of order
        if what == "signal":
            assert isinstance(arg, SignalKind)
            after = observe(b, Signal(kind=arg, at=now))
        elif what == "callback":
            assert isinstance(arg, str)
            result = callback(b, arg, now)
            after = result.build if isinstance(result, Accepted) else b
            if arg != TOKEN:
                assert isinstance(result, Refused)
        else:
            after = step(b, now)
        if b.stage in (Stage.READY, Stage.FAILED):
            assert after == b  # terminal: only a reinstall changes it
        assert _rank(after) >= _rank(b)
        assert set(b.entered.items()) <= set(after.entered.items())  # history is kept
        starts = [after.entered[s] for s in ORDER if s in after.entered]
        assert starts == sorted(starts)  # entry times never decrease along the stages
        if after.stage not in (Stage.FAILED, Stage.DEFINED):
            passed = ORDER[: ORDER.index(after.stage)]
            if Stage.INSTALLING in passed:
                assert K.CALLBACK in after.seen  # never without the callback
        b = after
