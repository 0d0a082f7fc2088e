"""How the source agent runs a live migration: pure decisions, tested in
tests/unit/test_strategy.py.

:func:`choose` picks the strategy up front from the policy and two measurements taken just
before starting: the link's rate to the target (a short probe over the storage network) and
the guest's dirty rate (libvirt's dirty-rate calculation).

- Pre-copy converges when the guest dirties memory clearly slower than the link carries it.
  Auto-converge stays on as a safety net, with QEMU's gentle defaults.
- Otherwise post-copy after the first round, when both hosts support it and the policy
  allows. The stream is paced just under the measured link so that the switch-over and the
  guest's page requests do not wait behind a full queue on the slow hop. (Switching at once
  saves the re-sent working set but stalls the guest for seconds on remote page faults:
  measured 5.9 s without an answer to ping, ADR 0006.)
- Otherwise pre-copy with auto-converge that starts throttling hard, sized from the ratio of
  the two rates: QEMU's defaults (20 %, +10 % per round) take many rounds over a slow link.
  Post-copy, xbzrle, compression and throttling are used only where the hosts say they are
  safe: not under TCG, where each of them corrupted guest memory in the lab (ADR 0006); there
  a busy guest gets plain pre-copy, the downtime target rising in steps, then the timeout.
- On a slow link (under 1 Gbit/s) pages are compressed: CPU is cheaper than the wire.
  On a fast one, a guest that dirties memory gets xbzrle (re-sent pages as deltas).
  Neither where the hosts say page encoding is unsafe: under TCG, QEMU 7.2 corrupted guest
  memory with either (ADR 0006); the policy cannot force them there.
- Post-copy never goes with compression (the same corruption was seen).

:class:`Governor` watches the running job: it raises the downtime target in steps when
progress stalls with the guest throttled as far as it goes, and aborts at the completion
timeout — a migration never ends in a forced pause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kumo.hypervisor.base import Directive
from kumo.model.activity import MigrationProgress
from kumo.model.migration import MigrationPolicy, Strategy

SLOW_LINK_MIB_S = 110.0  # about 1 Gbit/s
PACE = 0.9  # post-copy streams at this share of the measured link
CONVERGES = 0.5  # pre-copy is left alone while dirty rate < this share of the link
THROTTLE_TO = 0.1  # else throttle until the guest dirties this share of the link
MAX_THROTTLE = 99  # QEMU's ceiling
STALL_ROUNDS = 2  # rounds without progress, throttled to the ceiling, before raising downtime
DOWNTIME_STEP = 1.5


@dataclass(frozen=True)
class Measured:
    memory_mib: int
    link_mib_s: float | None  # None: not measured
    dirty_rate_mib_s: float | None  # None: not measured (the link carries the RAM at once)
    postcopy: bool  # both hosts support post-copy
    encoding: bool  # xbzrle, compression and auto-converge are safe on both hosts (not TCG)


def _pow2(mib: float) -> int:
    return int(2 ** math.ceil(math.log2(max(mib, 1.0))))


def choose(policy: MigrationPolicy, seen: Measured) -> Strategy:
    link = seen.link_mib_s
    if policy.bandwidth_mib_s:
        link = min(link, policy.bandwidth_mib_s) if link else float(policy.bandwidth_mib_s)
    dirty = seen.dirty_rate_mib_s
    throttle = policy.auto_converge and seen.encoding
    timeout = max(float(policy.min_timeout_s), policy.timeout_s_per_gib * seen.memory_mib / 1024.0)
    slow = link is not None and link < SLOW_LINK_MIB_S
    compress = seen.encoding and (
        policy.compression == "on" or (policy.compression == "auto" and slow)
    )
    busy = dirty is not None and dirty >= 1.0
    xbzrle = seen.encoding and (
        policy.xbzrle == "on" or (policy.xbzrle == "auto" and busy and not compress)
    )
    parallel = 0 if compress else policy.parallel
    base = Strategy(
        name="",
        reason="",
        dirty_rate_mib_s=dirty,
        link_mib_s=seen.link_mib_s,
        auto_converge=throttle,
        xbzrle=xbzrle,
        xbzrle_cache_mib=min(_pow2(seen.memory_mib / 2), 1024) if xbzrle else 0,
        compression=compress,
        parallel=parallel,
        bandwidth_mib_s=policy.bandwidth_mib_s,
        downtime_ms=policy.downtime_ms,
        max_downtime_ms=policy.max_downtime_ms,
        timeout_s=timeout,
    )
    on = [
        x
        for x, used in (("compression", compress), ("xbzrle", xbzrle), ("multifd", parallel > 0))
        if used
    ]
    suffix = "".join("+" + x for x in on)
    rates = (f"dirty {dirty:.1f} MiB/s" if dirty is not None else "dirty rate not measured") + (
        f", link {link:.1f} MiB/s" if link else ", link not measured"
    )
    if dirty is None or link is None or dirty < CONVERGES * link:
        return base.model_copy(
            update={"name": "pre-copy" + suffix, "reason": f"{rates}: plain pre-copy converges"}
        )
    if policy.postcopy == "auto" and seen.postcopy:
        pace = int(PACE * link)
        return base.model_copy(
            update={
                "name": "post-copy" + ("+xbzrle" if xbzrle else ""),
                "reason": f"{rates}: pre-copy cannot converge; post-copy "
                + "after the first round"
                + (f", paced at {pace} MiB/s" if pace >= 1 and not policy.bandwidth_mib_s else ""),
                "postcopy": True,
                "compression": False,
                "bandwidth_mib_s": policy.bandwidth_mib_s or (pace if pace >= 1 else 0),
            }
        )
    if not throttle:
        why = (
            "the policy forbids throttling"
            if not policy.auto_converge
            else "throttling is unsafe on these hosts (TCG: a throttled guest was corrupted "
            "at switch-over, ADR 0006)"
        )
        return base.model_copy(
            update={
                "name": "pre-copy" + suffix,
                "reason": f"{rates}: pre-copy may not converge and {why}; the downtime "
                "target rises in steps, then the timeout aborts",
            }
        )
    # Throttle so that each round is a tenth of the one before: QEMU throttles only from
    # the third round on, and every round at a gentler throttle re-sends the working set.
    initial = max(20, min(MAX_THROTTLE, 100 - int(100 * THROTTLE_TO * link / dirty)))
    why = (
        "post-copy not supported by both hosts"
        if policy.postcopy == "auto"
        else "post-copy off by policy"
    )
    return base.model_copy(
        update={
            "name": "pre-copy+throttle" + suffix,
            "reason": f"{rates}: pre-copy cannot converge ({why}); auto-converge from {initial} %",
            "throttle_initial": initial,
            "throttle_increment": max(5, (MAX_THROTTLE - initial) // 2),
        }
    )


class Governor:
    """Decides, at each progress sample, whether to raise the downtime target, switch to
    post-copy or abort."""

    def __init__(self, strategy: Strategy) -> None:
        self.s = strategy
        self.downtime = strategy.downtime_ms
        self._round = 0
        self._best_remaining: int | None = None
        self._stalled = 0
        self._switched = False

    def step(self, p: MigrationProgress) -> Directive:
        if p.elapsed_s >= self.s.timeout_s:
            return Directive(
                abort=f"did not complete within {self.s.timeout_s:.0f} s (the policy's "
                f"timeout for this VM's memory); aborted, never force-paused"
            )
        if self.s.postcopy and not self._switched and p.iteration >= 2:
            self._switched = True
            return Directive(postcopy=True)
        if p.iteration <= self._round:
            return Directive()
        self._round = p.iteration
        # One sample per new round: did the remaining data shrink?
        if self._best_remaining is None or p.bytes_remaining < 0.9 * self._best_remaining:
            self._best_remaining = p.bytes_remaining
            self._stalled = 0
            return Directive()
        throttled_out = not self.s.auto_converge or p.throttle_pct >= MAX_THROTTLE
        if p.iteration < 3 or not throttled_out:
            return Directive()
        self._stalled += 1
        if self._stalled < STALL_ROUNDS or self.downtime >= self.s.max_downtime_ms:
            return Directive()
        self._stalled = 0
        self.downtime = min(self.s.max_downtime_ms, int(self.downtime * DOWNTIME_STEP))
        return Directive(downtime_ms=self.downtime)
