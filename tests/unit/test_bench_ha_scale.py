"""The HA scale benchmark measures real recoveries: at a tiny size, its building blocks kill
and fence a host and the leader's recovery places every HA VM of that host on a live host
(so the benchmark cannot time a recovery that did nothing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bench.ha_scale import Cluster, build, ha_vms_on, time_recover, time_run

from kumo.model.ha import HAMode
from kumo.model.vm import Placement, VMSpec
from kumo.store import keys
from kumo.store.records import load


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = build(n_hosts=6, n_vms=60, n_victims=2, ha_per_victim=8)
    try:
        yield c
    finally:
        c.close()


def placed_on(c: Cluster, vm: str) -> str:
    found = load(c.store, Placement, keys.PLACEMENT + vm)
    assert found is not None
    return found[0].host


def test_the_cluster_is_built_as_asked(cluster: Cluster) -> None:
    c = cluster
    assert len(c.leases) == 6 and len(c.victims) == 2
    specs = c.service.view.models(VMSpec, keys.VMS)
    assert len(specs) == 60
    for v in c.victims:
        assert len(ha_vms_on(c, v)) == 8
    assert any(s.ha.mode == HAMode.OFF for s, _ in specs.values())
    assert any(s.ha.priority > 0 for s, _ in specs.values())


def test_recover_places_every_ha_vm_of_the_dead_host_on_a_live_host(cluster: Cluster) -> None:
    c = cluster
    dead = c.victims[0]
    vms = ha_vms_on(c, dead)
    off = [
        v
        for v, (s, _) in c.service.view.models(VMSpec, keys.VMS).items()
        if s.ha.mode == HAMode.OFF and placed_on(c, v) == dead
    ]
    sample = time_recover(c, dead)
    assert sample.vms == sample.recovered == 8
    assert c.store.get(keys.FENCED + dead) is not None
    for v in vms:
        assert placed_on(c, v) in c.leases, v
    assert off and all(placed_on(c, v) == dead for v in off)  # ha: off stays


def test_run_fences_after_the_grace_and_recovers(cluster: Cluster) -> None:
    c = cluster
    dead = c.victims[1]
    vms = ha_vms_on(c, dead)
    sample = time_run(c, dead)
    assert sample.vms == sample.recovered == 8
    assert c.store.get(keys.FENCED + dead) is not None
    assert all(placed_on(c, v) in c.leases for v in vms)
