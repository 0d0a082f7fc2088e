"""Every part of the server stamps what it writes with the one clock and id source of its
``ClusterState``: migrations and maintenance too, so a simulated run replays byte for byte."""

from __future__ import annotations

from kumo.clock import CountedIds
from kumo.model.activity import Event
from kumo.model.migration import MigrationSettings
from kumo.server.schemas import VMCreate
from kumo.server.service import ClusterService
from kumo.sim.clock import VirtualClock
from kumo.sim.cluster import define_basics, register_hosts, sim_host
from kumo.store import keys
from kumo.store.memory import MemoryStore
from kumo.store.records import decode


def test_maintenance_and_migration_settings_use_the_states_clock_and_ids() -> None:
    store = MemoryStore()
    register_hosts(store, [sim_host("h1")])
    svc = ClusterService(store, clock=VirtualClock(epoch=1234.5), ids=CountedIds("x"))
    [task] = svc.migrations.maintenance("h1", "enter", False, "t")
    svc.migrations.set_settings(MigrationSettings(), "t")
    assert (task.id, task.created_at) == ("x000001", 1234.5)
    events = store.range(keys.EVENTS)
    assert [e.key.rsplit("-", 1)[1] for e in events] == ["x000002", "x000003"]
    assert {decode(Event, e).time for e in events} == {1234.5}


def test_a_new_vms_uuid_comes_from_the_states_source() -> None:
    store = MemoryStore()
    register_hosts(store, [sim_host("h1")])
    svc = ClusterService(store, new_uuid=lambda: "6b756d6f-0000-4000-8000-00000000abcd")
    define_basics(svc)
    svc.create_vm(VMCreate(name="web1", image="img", memory_mib=128), "t")
    assert svc.state.spec("web1")[0].uuid == "6b756d6f-0000-4000-8000-00000000abcd"
