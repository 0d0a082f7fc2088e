"""The migration benchmark is fair and honest: its virsh-ac row gives virsh exactly the
libvirt flags and parameters kumo gives libvirt for the same strategy, and the bound refuses
to guess when libvirt gives no zero-page count."""

from __future__ import annotations

import itertools
from typing import Any

import libvirt
import pytest
from bench.migration import BoundUnknown, bound_s, judge, virsh_options

from kumo.agent.strategy import Measured, choose
from kumo.hypervisor.base import MigrationTarget
from kumo.hypervisor.libvirt_hv import _flags_and_params
from kumo.model.migration import MigrationPolicy, Strategy

# What virsh (tools/virsh-domain.c, libvirt 9.0) turns each option into.
FLAG_OPTIONS = {
    "--auto-converge": libvirt.VIR_MIGRATE_AUTO_CONVERGE,
    "--compressed": libvirt.VIR_MIGRATE_COMPRESSED,
    "--parallel": libvirt.VIR_MIGRATE_PARALLEL,
    "--postcopy": libvirt.VIR_MIGRATE_POSTCOPY,
    "--postcopy-after-precopy": 0,  # virsh's own switch after the first pass
}
PARAM_OPTIONS = {
    "--bandwidth": libvirt.VIR_MIGRATE_PARAM_BANDWIDTH,
    "--auto-converge-initial": libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL,
    "--auto-converge-increment": libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT,
    "--comp-xbzrle-cache": libvirt.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE,
    "--comp-mt-level": libvirt.VIR_MIGRATE_PARAM_COMPRESSION_MT_LEVEL,
    "--comp-mt-threads": libvirt.VIR_MIGRATE_PARAM_COMPRESSION_MT_THREADS,
    "--comp-mt-dthreads": libvirt.VIR_MIGRATE_PARAM_COMPRESSION_MT_DTHREADS,
    "--comp-methods": libvirt.VIR_MIGRATE_PARAM_COMPRESSION,
    "--parallel-connections": libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS,
    "--postcopy-bandwidth": libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY,
}
# given on every virsh command line of the benchmark, outside virsh_options
BASE = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_UNSAFE
)
TARGET = MigrationTarget(host="h2", libvirt_uri="qemu+tcp://h2/system", migrate_uri="tcp://h2")


def as_libvirt(opts: list[str]) -> tuple[int, dict[str, Any]]:
    flags, params, i = 0, {}, 0
    while i < len(opts):
        if opts[i] in FLAG_OPTIONS:
            flags |= FLAG_OPTIONS[opts[i]]
            i += 1
        else:
            value = opts[i + 1]
            params[PARAM_OPTIONS[opts[i]]] = (
                value.split(",") if opts[i] == "--comp-methods" else int(value)
            )
            i += 2
    return flags, params


def kumo_gives(s: Strategy) -> tuple[int, dict[str, Any]]:
    flags, params = _flags_and_params(s, TARGET)
    del params[libvirt.VIR_MIGRATE_PARAM_URI]
    return flags & ~BASE, params


def strategies(postcopy: bool) -> list[Strategy]:
    policies = [
        MigrationPolicy(),
        MigrationPolicy(postcopy="off"),
        MigrationPolicy(auto_converge=False, postcopy="off"),
        MigrationPolicy(compression="on", xbzrle="on", parallel=4, bandwidth_mib_s=50),
        MigrationPolicy(xbzrle="on", parallel=2),
    ]
    seen = [
        Measured(256, link, dirty, postcopy=pc, encoding=enc)
        for link, dirty, pc, enc in itertools.product(
            (10.0, 500.0, None), (0.1, 64.0, None), (False, True), (False, True)
        )
    ]
    chosen = [choose(p, m) for p in policies for m in seen]
    unique = {
        s.model_dump_json(exclude={"reason", "dirty_rate_mib_s", "link_mib_s"}): s for s in chosen
    }
    return [s for s in unique.values() if s.postcopy == postcopy]


@pytest.mark.parametrize("s", strategies(postcopy=False), ids=lambda s: s.name)
def test_virsh_gets_what_kumo_gives_libvirt(s: Strategy) -> None:
    assert as_libvirt(virsh_options(s)) == kumo_gives(s)


def test_the_busy_case_gives_virsh_kumos_throttle_and_none_under_tcg() -> None:
    s = choose(MigrationPolicy(), Measured(256, 10.0, 64.0, postcopy=False, encoding=True))
    opts = virsh_options(s)
    assert opts[opts.index("--auto-converge-initial") + 1] == str(s.throttle_initial)
    tcg = choose(MigrationPolicy(), Measured(256, 10.0, 64.0, postcopy=False, encoding=False))
    assert "--auto-converge" not in virsh_options(tcg)


@pytest.mark.parametrize("s", strategies(postcopy=True)[:1], ids=lambda s: s.name)
def test_post_copy_bandwidth_in_the_same_unit(s: Strategy) -> None:
    assert as_libvirt(virsh_options(s)) == kumo_gives(s)


def row(method: str, **fields: Any) -> dict[str, Any]:
    return {"workload": "busy", "method": method, "detail": "", **fields}


def test_the_bound_fails_loudly_without_a_zero_page_count() -> None:
    with pytest.raises(BoundUnknown, match="no zero-page count"):
        bound_s([row("virsh", zero_pages=None), row("kumo")], "busy", 10e6)
    with pytest.raises(BoundUnknown, match="no plain virsh run"):
        bound_s([row("kumo")], "busy", 10e6)


def test_the_bound_is_the_non_zero_memory_over_the_link() -> None:
    # 256 MiB, of which 16384 zero pages (64 MiB): 192 MiB over 10 MB/s
    assert bound_s([row("virsh", zero_pages=16384)], "busy", 10e6) == 20.1


def test_the_target_is_judged_on_the_guests_downtime() -> None:
    base = {"start": 0.0, "end": 25.0, "ok": True, "forced_pause": False, "same_boot": True}
    fine = row("kumo", **base, downtime_ms=280.0, libvirt_downtime_ms=250.0)
    judge(fine, 20.0)
    assert fine["target_met"] and fine["ratio"] == 1.25
    # libvirt says 250 ms, the guest was silent for 1 s: not met
    silent = row("kumo", **base, downtime_ms=1000.0, libvirt_downtime_ms=250.0)
    judge(silent, 20.0)
    assert not silent["target_met"]
    slow = row("kumo", **base, downtime_ms=280.0, libvirt_downtime_ms=250.0)
    judge(slow, 10.0)
    assert not slow["target_met"]  # 2.5x the bound
    paused = row("virsh", **{**base, "forced_pause": True}, downtime_ms=200.0)
    judge(paused, 20.0)
    assert not paused["converged"] and not paused["target_met"]
