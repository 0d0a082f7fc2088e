"""The migration strategy (chosen up front from the policy and two measurements) and the
governor that raises the downtime target on stalls and aborts at the timeout."""

from __future__ import annotations

from kumo.agent.strategy import Governor, Measured, choose
from kumo.model.activity import MigrationProgress
from kumo.model.migration import MigrationOverride, MigrationPolicy, effective

POLICY = MigrationPolicy()


def seen(link: float | None, dirty: float | None, postcopy: bool = False) -> Measured:
    return Measured(
        memory_mib=2048,
        link_mib_s=link,
        dirty_rate_mib_s=dirty,
        postcopy=postcopy,
        encoding=True,
    )


def test_a_quiet_guest_gets_plain_pre_copy_with_the_safety_net() -> None:
    s = choose(POLICY, seen(1200.0, 5.0))
    assert s.name == "pre-copy+xbzrle" and s.auto_converge and s.throttle_initial == 20
    assert s.xbzrle_cache_mib == 1024 and not s.compression
    assert s.timeout_s == 240.0  # 120 s a GiB
    assert "converges" in s.reason


def test_a_busy_guest_on_a_fast_link_gets_xbzrle_and_throttling() -> None:
    s = choose(POLICY, seen(1200.0, 2000.0))
    assert s.name == "pre-copy+throttle+xbzrle"
    assert s.throttle_initial == 94 and s.throttle_increment == 5
    assert "post-copy not supported by both hosts" in s.reason


def test_post_copy_when_both_hosts_support_it_unless_the_policy_says_no() -> None:
    assert choose(POLICY, seen(100.0, 400.0, postcopy=True)).postcopy
    off = effective(POLICY, MigrationOverride(postcopy="off"))
    s = choose(off, seen(100.0, 400.0, postcopy=True))
    assert not s.postcopy and "post-copy off by policy" in s.reason


def test_the_bandwidth_cap_counts_as_the_link() -> None:
    capped = effective(POLICY, MigrationOverride(bandwidth_mib_s=10))
    s = choose(capped, seen(1200.0, 30.0))
    assert s.name == "pre-copy+throttle+compression" and s.bandwidth_mib_s == 10
    assert s.throttle_initial == 97


def test_nothing_measured_means_pre_copy_and_the_policy_switches_win() -> None:
    s = choose(POLICY, seen(None, None))
    assert s.name == "pre-copy" and "not measured" in s.reason
    forced = effective(
        POLICY, MigrationOverride(xbzrle="on", compression="on", auto_converge=False)
    )
    s = choose(forced, seen(None, None))
    assert s.xbzrle and s.compression and not s.auto_converge


def progress(
    iteration: int, remaining: int, throttle: int = 99, t: float = 10.0
) -> MigrationProgress:
    return MigrationProgress(
        iteration=iteration, bytes_remaining=remaining, throttle_pct=throttle, elapsed_s=t
    )


def test_the_governor_raises_downtime_in_steps_only_when_throttling_is_exhausted() -> None:
    g = Governor(choose(POLICY, seen(10.0, 100.0)))
    assert g.step(progress(1, 100)).downtime_ms is None
    assert g.step(progress(2, 80, throttle=50)).downtime_ms is None  # shrinking
    assert g.step(progress(3, 80, throttle=50)).downtime_ms is None  # throttle can still rise
    assert g.step(progress(4, 80)).downtime_ms is None  # stalled once at 99 %
    assert g.step(progress(5, 80)).downtime_ms == 450  # stalled twice: 300 ms x 1.5
    assert g.step(progress(5, 80)).downtime_ms is None  # one sample per round
    raised = [g.step(progress(i, 80)).downtime_ms for i in range(6, 20)]
    assert [d for d in raised if d] == [675, 1012, 1518, 2000]  # up to max_downtime_ms


def test_the_governor_aborts_at_the_timeout() -> None:
    g = Governor(choose(POLICY, seen(10.0, 100.0)))
    assert g.step(progress(1, 100, t=239.0)).abort is None
    d = g.step(progress(1, 100, t=240.0))
    assert d.abort and "within 240 s" in d.abort and "never force-paused" in d.abort


def test_the_governor_switches_to_post_copy_after_the_first_round() -> None:
    s = choose(POLICY, seen(100.0, 60.0, postcopy=True))
    assert s.postcopy and s.bandwidth_mib_s == 90
    g = Governor(s)
    assert not g.step(progress(1, 100)).postcopy
    assert g.step(progress(2, 100)).postcopy
    assert not g.step(progress(3, 100)).postcopy


def test_page_encoding_is_never_used_where_it_is_unsafe() -> None:
    tcg = Measured(
        memory_mib=2048, link_mib_s=9.0, dirty_rate_mib_s=60.0, postcopy=False, encoding=False
    )
    forced = effective(POLICY, MigrationOverride(xbzrle="on", compression="on"))
    s = choose(forced, tcg)
    assert not s.xbzrle and not s.compression and s.name == "pre-copy+throttle"


def test_post_copy_goes_without_compression() -> None:
    s = choose(POLICY, seen(9.0, 60.0, postcopy=True))
    assert s.postcopy and not s.compression and s.name == "post-copy"
