"""The control-plane benchmark measures a cluster that resembles a real one: its hosts fill
up so that the scheduler's filters refuse some creates, and its simulated agents write each
placed VM's status and finish its task as a real agent does."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.control_plane import CLASS_CYCLE, flavors, refusal_reason, sim_hosts, start_etcd
from bench.sim_agents import SimAgents

from kumo.model.activity import Task, TaskState
from kumo.model.vm import Placement, VMState, VMStatus
from kumo.scheduler.placement import Chosen, Demand, HostUsage, HostView, place
from kumo.sim.cluster import vm_spec
from kumo.store import keys
from kumo.store.activity import new_task
from kumo.store.etcd import EtcdStore
from kumo.store.records import load, put


def test_hosts_are_sized_so_that_filters_refuse_some_creates() -> None:
    vms, n = 1000, 100
    hosts = sim_hosts(n, vms)
    views = [
        HostView(
            h.name,
            True,
            True,
            h.cpus,
            h.memory_mib,
            frozenset(h.pools),
            frozenset(h.networks),
            frozenset(h.cpu_models),
        )
        for h in hosts
    ]
    usage: dict[str, HostUsage] = {}
    reasons: Counter[str] = Counter()
    for i, f in enumerate(flavors(vms)):
        d = Demand(
            name=f"v{i}",
            vcpus=f.vcpus,
            memory_mib=f.memory_mib,
            pool="fast" if f.image == "img-fast" else "shared",
            networks=frozenset({"public"}),
            cpu_model=f.cpu_model,
        )
        got = place(d, views, usage)
        if isinstance(got, Chosen):
            usage[got.host] = usage.get(got.host, HostUsage()).plus(d)
        else:
            reasons[refusal_reason(str(got))] += 1
    assert 0.05 * vms < sum(reasons.values()) < 0.3 * vms, reasons
    assert reasons["memory"] and reasons["cpu"] and not reasons["other"], reasons
    for c in dict.fromkeys(CLASS_CYCLE):  # every class of host ends nearly full
        mine = [h for h in hosts if h.name.startswith(c.name)]
        used = sum(usage.get(h.name, HostUsage()).memory_mib for h in mine)
        assert used > 0.7 * sum(h.memory_mib for h in mine), c.name


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[str]:
    """An etcd of its own: the simulated agents register hosts under /kumo/."""
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed: run scripts/setup")
    proc, url = start_etcd(tmp_path)
    try:
        yield url
    finally:
        proc.kill()
        proc.wait()


def test_simulated_agents_write_status_and_finish_the_task(own_etcd: str) -> None:
    store = EtcdStore(own_etcd)
    host = sim_hosts(1, 10)[0]
    agents = SimAgents(own_etcd, [host], workers=1, churn_per_s=50.0)
    agents.start()
    try:
        assert store.get(keys.ALIVE + host.name) is not None
        task = new_task("vm.create", "vm/web1", "test")
        spec = vm_spec("web1", task=task.id)
        store.commit(
            [],
            [
                put(keys.TASKS + task.id, task),
                put(keys.VMS + "web1", spec),
                put(keys.PLACEMENT + "web1", Placement(host=host.name, at=time.time())),
            ],
        )
        deadline = time.monotonic() + 10
        while agents.counts.first_passes < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        status = load(store, VMStatus, keys.VMSTATUS + "web1")
        assert status is not None and status[0].host == host.name
        done = load(store, Task, keys.TASKS + task.id)
        assert done is not None and done[0].state == TaskState.SUCCEEDED
        # then its state changes at the churn rate, each a new status record
        while agents.counts.status_writes < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert agents.counts.status_writes >= 3
        later = load(store, VMStatus, keys.VMSTATUS + "web1")
        assert later is not None and later[0].state in (VMState.RUNNING, VMState.STOPPED)
        assert later[1] > status[1]
        assert agents.counts.errors == []
    finally:
        agents.stop()
        store.close()
