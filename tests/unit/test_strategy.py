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


def test_page_encoding_and_throttling_are_never_used_where_they_are_unsafe() -> None:
    tcg = Measured(
        memory_mib=2048, link_mib_s=9.0, dirty_rate_mib_s=60.0, postcopy=False, encoding=False
    )
    forced = effective(POLICY, MigrationOverride(xbzrle="on", compression="on"))
    s = choose(forced, tcg)
    assert not s.xbzrle and not s.compression and not s.auto_converge and s.name == "pre-copy"
    assert "throttling is unsafe on these hosts (TCG" in s.reason
    assert not choose(
        POLICY, Measured(2048, 9.0, 0.1, postcopy=False, encoding=False)
    ).auto_converge


def test_post_copy_goes_without_compression() -> None:
    s = choose(POLICY, seen(9.0, 60.0, postcopy=True))
    assert s.postcopy and not s.compression and s.name == "post-copy"


# -- choose: the edges of each rule, and what the strategy carries ------------------------


def test_the_reason_states_both_measurements_and_the_rule() -> None:
    s = choose(POLICY, seen(1200.0, 2000.0))
    assert s.reason == (
        "dirty 2000.0 MiB/s, link 1200.0 MiB/s: pre-copy cannot converge (post-copy not "
        "supported by both hosts); auto-converge from 94 %"
    )
    s = choose(POLICY, seen(None, None))
    assert s.reason == "dirty rate not measured, link not measured: plain pre-copy converges"
    off = effective(POLICY, MigrationOverride(postcopy="off"))
    s = choose(off, seen(100.0, 400.0, postcopy=True))
    assert s.reason == (
        "dirty 400.0 MiB/s, link 100.0 MiB/s: pre-copy cannot converge (post-copy off by "
        "policy); auto-converge from 98 %"
    )


def test_pre_copy_converges_below_half_the_link_only() -> None:
    assert choose(POLICY, seen(1200.0, 599.0)).name == "pre-copy+xbzrle"
    assert choose(POLICY, seen(1200.0, 600.0)).name == "pre-copy+throttle+xbzrle"


def test_the_throttle_starts_from_the_ratio_of_the_rates_and_climbs_by_half_the_rest() -> None:
    s = choose(POLICY, seen(1000.0, 600.0))
    assert (s.throttle_initial, s.throttle_increment) == (84, 7)  # 100 - 10 x 1000/600


def test_a_link_under_1_gbit_gets_compression_and_at_1_gbit_does_not() -> None:
    assert choose(POLICY, seen(109.9, 0.5)).name == "pre-copy+compression"
    assert choose(POLICY, seen(110.0, 0.5)).name == "pre-copy"


def test_xbzrle_from_a_dirty_rate_of_1_mib_s() -> None:
    assert choose(POLICY, seen(1200.0, 0.99)).name == "pre-copy"
    s = choose(POLICY, seen(1200.0, 1.0))
    assert s.name == "pre-copy+xbzrle" and s.xbzrle


def test_the_xbzrle_cache_is_half_the_memory_rounded_up_to_a_power_of_two() -> None:
    def cache(memory_mib: int, dirty: float) -> int:
        m = Measured(memory_mib, 1200.0, dirty, postcopy=False, encoding=True)
        return choose(POLICY, m).xbzrle_cache_mib

    assert cache(512, 5.0) == 256
    assert cache(600, 5.0) == 512
    assert cache(8192, 5.0) == 1024  # at most 1 GiB
    assert cache(512, 0.0) == 0  # no xbzrle, no cache


def test_the_bandwidth_cap_applies_whether_or_not_the_link_was_measured() -> None:
    capped = effective(POLICY, MigrationOverride(bandwidth_mib_s=200))
    assert choose(capped, seen(50.0, 0.5)).name == "pre-copy+compression"  # the link: 50
    s = choose(capped, seen(None, 0.5))
    assert s.name == "pre-copy" and s.reason.endswith("link 200.0 MiB/s: plain pre-copy converges")
    assert s.link_mib_s is None  # what was measured, not the cap


def test_multifd_streams_unless_pages_are_compressed() -> None:
    multi = effective(POLICY, MigrationOverride(parallel=1))
    s = choose(multi, seen(1200.0, 5.0))
    assert s.name == "pre-copy+xbzrle+multifd" and s.parallel == 1
    s = choose(multi, seen(50.0, 5.0))
    assert s.name == "pre-copy+compression" and s.parallel == 0


def test_the_strategy_carries_the_policy_s_downtime_targets() -> None:
    p = effective(POLICY, MigrationOverride(downtime_ms=100, max_downtime_ms=900))
    s = choose(p, seen(1200.0, 5.0))
    assert (s.downtime_ms, s.max_downtime_ms) == (100, 900)


def test_post_copy_keeps_xbzrle_and_is_paced_under_the_link() -> None:
    s = choose(POLICY, seen(1000.0, 600.0, postcopy=True))
    assert s.name == "post-copy+xbzrle" and s.bandwidth_mib_s == 900
    assert s.reason == (
        "dirty 600.0 MiB/s, link 1000.0 MiB/s: pre-copy cannot converge; post-copy after the "
        "first round, paced at 900 MiB/s"
    )
    capped = effective(POLICY, MigrationOverride(bandwidth_mib_s=50))
    s = choose(capped, seen(1000.0, 600.0, postcopy=True))
    assert s.bandwidth_mib_s == 50 and "paced" not in s.reason


def test_post_copy_on_a_link_too_slow_to_pace_is_not_paced() -> None:
    s = choose(POLICY, seen(1.2, 60.0, postcopy=True))
    assert s.bandwidth_mib_s == 1 and s.reason.endswith(", paced at 1 MiB/s")
    s = choose(POLICY, seen(1.0, 60.0, postcopy=True))  # 0.9 MiB/s: rounds to 0, unlimited
    assert s.bandwidth_mib_s == 0 and s.reason.endswith("post-copy after the first round")


def test_without_auto_converge_a_busy_guest_gets_plain_pre_copy_and_rising_downtime() -> None:
    no_throttle = effective(POLICY, MigrationOverride(auto_converge=False))
    s = choose(no_throttle, seen(1200.0, 2000.0))
    assert s.name == "pre-copy+xbzrle" and not s.auto_converge
    assert s.reason == (
        "dirty 2000.0 MiB/s, link 1200.0 MiB/s: pre-copy may not converge and the policy "
        "forbids throttling; the downtime target rises in steps, then the timeout aborts"
    )


# -- the governor: which samples count as a stall -----------------------------------------


def stalls(samples: list[MigrationProgress]) -> list[int | None]:
    """The downtime target the governor asks for at each sample (None: no change)."""
    g = Governor(choose(POLICY, seen(10.0, 100.0)))
    return [g.step(p).downtime_ms for p in samples]


def test_stalls_count_from_the_third_round_and_raise_every_second_one() -> None:
    flat = [progress(i, 100) for i in range(1, 9)]
    # rounds 3 and 4 stall: raise; 5 and 6: raise again; 7, 8: again
    assert stalls(flat) == [None, None, None, 450, None, 675, None, 1012]


def test_remaining_data_must_shrink_by_a_tenth_to_count_as_progress() -> None:
    # 90 of 100 is not progress (rounds 3 and 4 stall); 89 is (the count starts again)
    assert stalls([progress(1, 100), progress(2, 100), progress(3, 90), progress(4, 90)]) == [
        None,
        None,
        None,
        450,
    ]
    shrinking = [progress(i, 100 - 11 * i) for i in range(1, 9)]
    assert stalls(shrinking) == [None] * 8


def test_repeated_samples_of_one_round_count_once() -> None:
    samples = [progress(1, 100), progress(2, 100), progress(3, 100), progress(3, 100)]
    samples += [progress(3, 100), progress(4, 100)]
    assert stalls(samples) == [None, None, None, None, None, 450]


def test_the_first_round_sets_the_mark_progress_is_measured_against() -> None:
    # 95 is no progress against round 1's 100, so 88 in round 3 is: stalls count from round 4
    samples = [progress(1, 100), progress(2, 95)] + [progress(i, 88) for i in (3, 4, 5)]
    assert stalls(samples) == [None, None, None, None, 450]
