"""HA through the API on the in-memory store: a VM's policy (create, replace, shown), the
scheduler honouring its hosts and preferred host, an operator's fence, the states HA makes
a VM and a host show, `ha status`, `ha plan` and the HA settings; each refusal names its
field and writes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kumo.model.ha import FencedHost, HAStatus, RecoveryState
from kumo.model.vm import Migration, VMState, VMStatus
from kumo.server.app import create_app
from kumo.server.auth import bootstrap
from kumo.server.service import ClusterService
from kumo.sim.cluster import register_hosts, sim_host
from kumo.store import keys
from kumo.store.base import Delete, LeaseExpired
from kumo.store.memory import MemoryStore
from kumo.store.records import put

API = "/api/v1"


@pytest.fixture
def api() -> Iterator[tuple[TestClient, MemoryStore]]:
    store = MemoryStore()
    token = bootstrap(store)
    assert token
    for h in ("h1", "h2", "h3"):  # one lease each, as agents hold them
        register_hosts(store, [sim_host(h, cpus=2, memory_mib=1024)])
    client = TestClient(create_app(ClusterService(store)))
    client.headers["Authorization"] = f"Bearer {token}"
    assert client.post(f"{API}/pools", json={"name": "shared", "path": "/pool"}).is_success
    assert client.post(f"{API}/networks", json={"name": "public", "bridge": "br0"}).is_success
    image = {"name": "img", "pool": "shared", "path": "images/img.qcow2"}
    assert client.post(f"{API}/images", json=image).is_success
    yield client, store


def vm(name: str, **kw: object) -> dict[str, object]:
    return {"name": name, "image": "img", "memory_mib": 128, **kw}


def create(client: TestClient, name: str, **kw: object) -> dict[str, object]:
    r = client.post(f"{API}/vms", json=vm(name, **kw))
    assert r.status_code == 201, r.text
    return r.json()["vm"]  # type: ignore[no-any-return]


def host_dies(store: MemoryStore, host: str) -> None:
    store.commit([], [Delete(keys.ALIVE + host)])  # its lease expired


# -- the policy ------------------------------------------------------------------------------


def test_create_carries_the_policy_and_show_returns_it(
    api: tuple[TestClient, MemoryStore],
) -> None:
    client, _ = api
    ha = {"mode": "off", "priority": 100, "hosts": ["h1", "h2"], "preferred": "h1"}
    create(client, "a", ha={**ha, "failback": True, "max_restart": 2, "max_relocate": 0})
    shown = client.get(f"{API}/vms/a").json()["spec"]["ha"]
    assert shown == {
        **ha,
        "failback": True,
        "max_restart": 2,
        "max_relocate": 0,
    }
    create(client, "b")
    assert client.get(f"{API}/vms/b").json()["spec"]["ha"] == {
        "mode": "restart",
        "priority": 0,
        "hosts": [],
        "preferred": None,
        "failback": False,
        "max_restart": 1,
        "max_relocate": 1,
    }


def test_the_scheduler_honours_hosts_and_preferred_but_a_pin_wins(
    api: tuple[TestClient, MemoryStore],
) -> None:
    client, _ = api
    for i in range(3):  # spread alone would use every host
        assert create(client, f"only{i}", ha={"hosts": ["h2"]})["host"] == "h2"
    # h3 is the emptiest host; the preferred h1 wins over the weighers
    assert create(client, "pref", ha={"hosts": ["h1", "h3"], "preferred": "h1"})["host"] == "h1"
    assert create(client, "pinned", host="h3", ha={"hosts": ["h1"]})["host"] == "h3"
    host_dies(api[1], "h2")
    r = client.post(f"{API}/vms", json=vm("nowhere", ha={"hosts": ["h2"]}))
    assert r.status_code == 409 and "allowed hosts (h2)" in r.json()["detail"]


@pytest.mark.parametrize(
    ("ha", "status", "field"),
    [
        ({"priority": 1001}, 422, "ha.priority"),
        ({"priority": -1}, 422, "ha.priority"),
        ({"priority": "5"}, 422, "ha.priority"),
        ({"mode": "sometimes"}, 422, "ha.mode"),
        ({"hosts": []}, 422, "ha.hosts"),
        ({"hosts": ["H1"]}, 422, "ha.hosts.0"),
        ({"max_restart": 11}, 422, "ha.max_restart"),
        ({"color": "red"}, 422, "ha.color"),
        ({"hosts": ["h1"], "preferred": "h2"}, 422, "ha.preferred"),
        ({"hosts": ["h1", "nosuch"]}, 409, "ha.hosts"),
        ({"preferred": "nosuch"}, 409, "ha.preferred"),
    ],
)
def test_a_bad_policy_at_create_names_the_field_and_writes_nothing(
    api: tuple[TestClient, MemoryStore], ha: dict[str, object], status: int, field: str
) -> None:
    client, store = api
    rev = store.revision()
    r = client.post(f"{API}/vms", json=vm("bad", ha=ha))
    assert r.status_code == status, r.text
    body = r.json()
    named = [e["field"] for e in body["errors"]] if status == 422 else [body["field"]]
    assert named == [field]
    assert body["detail"].startswith(f"{field}: ")
    assert store.revision() == rev


def test_put_replaces_the_policy_with_an_event(api: tuple[TestClient, MemoryStore]) -> None:
    client, _ = api
    create(client, "a", ha={"priority": 7, "hosts": ["h1", "h2"]})
    r = client.put(f"{API}/vms/a/ha", json={"mode": "off", "preferred": "h3"})
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "off" and r.json()["preferred"] == "h3"
    spec = client.get(f"{API}/vms/a").json()["spec"]
    assert spec["ha"]["priority"] == 0 and spec["ha"]["hosts"] == []  # replaced whole
    assert spec["ha"]["preferred"] == "h3"
    events = client.get(f"{API}/events", params={"object": "vm/a"}).json()
    assert events[-1]["action"] == "ha-policy" and '"mode":"off"' in events[-1]["message"]
    r = client.put(f"{API}/vms/a/ha", json={"hosts": ["h2", "h2"]})
    assert r.json()["hosts"] == ["h2"]  # a host named twice counts once


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"priority": 2000}, 422, "priority"),
        ({"hosts": []}, 422, "hosts"),
        ({"hosts": ["h1"], "preferred": "h3"}, 422, "preferred"),
        ({"failback": 1}, 422, "failback"),
        ({"hosts": ["zz"]}, 409, "hosts"),
        ({"preferred": "zz"}, 409, "preferred"),
    ],
)
def test_a_bad_put_names_the_field_and_writes_nothing(
    api: tuple[TestClient, MemoryStore], body: dict[str, object], status: int, field: str
) -> None:
    client, store = api
    create(client, "a")
    rev = store.revision()
    r = client.put(f"{API}/vms/a/ha", json=body)
    assert r.status_code == status, r.text
    named = [e["field"] for e in r.json()["errors"]] if status == 422 else [r.json()["field"]]
    assert named == [field]
    assert store.revision() == rev
    r = client.put(f"{API}/vms/nosuch/ha", json={})
    assert r.status_code == 404 and r.json()["field"] == "name"


# -- fencing and the states it shows -----------------------------------------------------


def test_fence_needs_confirm_a_known_host_and_no_live_lease(
    api: tuple[TestClient, MemoryStore],
) -> None:
    client, store = api
    rev = store.revision()
    for body in ({}, {"confirm": False}, {"confirm": "yes"}):
        r = client.post(f"{API}/hosts/h1/fence", json=body)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "confirm", r.text
    r = client.post(f"{API}/hosts/nosuch/fence", json={"confirm": True})
    assert r.status_code == 404 and r.json()["field"] == "name"
    r = client.post(f"{API}/hosts/h1/fence", json={"confirm": True})
    assert r.status_code == 409 and "live lease" in r.json()["detail"]
    assert r.json()["field"] == "name"
    assert store.revision() == rev and store.get(keys.FENCED + "h1") is None


def test_force_fences_a_host_with_a_live_lease_and_revokes_it(
    api: tuple[TestClient, MemoryStore],
) -> None:
    client, store = api
    alive = store.get(keys.ALIVE + "h1")
    assert alive is not None and alive.lease
    r = client.post(f"{API}/hosts/h1/fence", json={"confirm": True, "force": True})
    assert r.status_code == 200, r.text
    assert r.json()["reason"] == "confirmed by api:admin (forced: its lease was live)"
    assert store.get(keys.ALIVE + "h1") is None and store.get(keys.FENCED + "h1") is not None
    with pytest.raises(LeaseExpired):  # the agent finds its lease lost
        store.keepalive(alive.lease)
    assert [h["state"] for h in client.get(f"{API}/hosts").json()] == ["fenced", "up", "up"]


def test_fence_records_the_operators_word_once(api: tuple[TestClient, MemoryStore]) -> None:
    client, store = api
    host_dies(store, "h1")
    assert client.get(f"{API}/hosts/h1").json()["state"] == "down"
    r = client.post(f"{API}/hosts/h1/fence", json={"confirm": True})
    assert r.status_code == 200, r.text
    fenced = r.json()
    assert fenced["host"] == "h1" and fenced["by"] == "api:admin"
    assert fenced["reason"] == "confirmed by api:admin"
    entry = store.get(keys.FENCED + "h1")
    assert entry is not None
    shown = client.get(f"{API}/hosts/h1").json()
    assert shown["state"] == "fenced" and shown["fenced"]["reason"] == "confirmed by api:admin"
    assert [h["state"] for h in client.get(f"{API}/hosts").json()] == ["fenced", "up", "up"]
    events = client.get(f"{API}/events", params={"object": "host/h1"}).json()
    assert [(e["action"], e["message"]) for e in events] == [("fenced", "confirmed by api:admin")]
    rev = store.revision()
    again = client.post(f"{API}/hosts/h1/fence", json={"confirm": True})
    assert again.status_code == 200 and again.json() == fenced and store.revision() == rev


def test_vm_states_on_a_down_a_fenced_host_and_under_recovery(
    api: tuple[TestClient, MemoryStore],
) -> None:
    client, store = api
    create(client, "off1", host="h1", ha={"mode": "off"})
    create(client, "ha1", host="h1")
    create(client, "idle", host="h1", start=False)
    create(client, "ha2", host="h1")
    host_dies(store, "h1")
    states = {v["name"]: v["state"] for v in client.get(f"{API}/vms").json()}
    assert set(states.values()) == {"unknown"}
    store.commit(
        [],
        [
            put(keys.FENCED + "h1", FencedHost(host="h1", at=1.0, reason="lease expired", by="t")),
            put(
                keys.HA + "ha2",
                HAStatus(
                    vm="ha2",
                    state=RecoveryState.RECOVERING,
                    reason="no valid host: not enough free memory",
                    since=1.0,
                    failed_host="h1",
                ),
            ),
        ],
    )
    for view in (
        client.get(f"{API}/vms").json(),
        [client.get(f"{API}/vms/{n}").json() for n in ("ha1", "ha2", "idle", "off1")],
    ):
        shown = {v["name"]: (v["state"], v["message"]) for v in view}
        assert shown["off1"] == ("stopped", "host h1 is fenced: the VM is not running")
        assert shown["idle"] == ("stopped", "host h1 is fenced: the VM is not running")
        assert shown["ha1"][0] == "recovering" and "HA is to run" in shown["ha1"][1]
        assert shown["ha2"] == ("recovering", "no valid host: not enough free memory")
    error = HAStatus(
        vm="ha2", state=RecoveryState.ERROR, reason="start failed", since=1.0, failed_host="h1"
    )
    store.commit([], [put(keys.HA + "ha2", error)])
    assert client.get(f"{API}/vms/ha2").json()["state"] == "error"


# -- ha status, plan, settings -----------------------------------------------------------


def test_ha_status_shows_hosts_and_ha_vms(api: tuple[TestClient, MemoryStore]) -> None:
    client, store = api
    create(client, "a", host="h1", ha={"priority": 5})
    create(client, "b", host="h2", ha={"mode": "off"})
    host_dies(store, "h1")
    client.post(f"{API}/hosts/h1/fence", json={"confirm": True})
    status = client.get(f"{API}/ha/status").json()
    hosts = {h["name"]: h for h in status["hosts"]}
    assert hosts["h1"]["lease"] is False and hosts["h1"]["state"] == "fenced"
    assert hosts["h1"]["fenced"]["reason"] == "confirmed by api:admin"
    assert hosts["h1"]["vms"] == ["a"] and hosts["h2"]["vms"] == ["b"]
    assert hosts["h2"]["lease"] is True and hosts["h2"]["fenced"] is None
    assert [
        (v["name"], v["mode"], v["priority"], v["host"], v["state"]) for v in status["vms"]
    ] == [("a", "restart", 5, "h1", "recovering")]


def test_ha_plan_places_by_priority_and_says_why_others_wait(
    api: tuple[TestClient, MemoryStore],
) -> None:
    client, store = api
    # h1 holds three 300 MiB HA VMs; h2 and h3 have room for one each (1024 MiB hosts)
    for name, prio in (("low", 1), ("mid", 50), ("top", 900)):
        create(client, name, host="h1", memory_mib=300, ha={"priority": prio})
    create(client, "off", host="h1", memory_mib=64, ha={"mode": "off"})
    create(client, "fill2", host="h2", memory_mib=600)
    create(client, "fill3", host="h3", memory_mib=600)
    rev = store.revision()
    plan = client.get(f"{API}/ha/plan", params={"fail": "h1"}).json()
    assert plan["failed"] == ["h1"]
    assert [(p["vm"], p["was_on"]) for p in plan["restart"]] == [("top", "h1"), ("mid", "h1")]
    assert {p["to"] for p in plan["restart"]} == {"h2", "h3"}
    assert [w["vm"] for w in plan["waits"]] == ["low"]
    assert plan["waits"][0]["reason"].startswith("no valid host: not enough free memory")
    assert plan["not_recovered"] == ["off"]
    assert store.revision() == rev  # reads only
    # By default: the hosts down or fenced now (none, then h1).
    assert client.get(f"{API}/ha/plan").json()["failed"] == []
    host_dies(store, "h1")
    assert client.get(f"{API}/ha/plan").json()["failed"] == ["h1"]


def test_ha_plan_honours_allowed_and_preferred_hosts(api: tuple[TestClient, MemoryStore]) -> None:
    client, _ = api
    create(client, "a", host="h1", ha={"hosts": ["h1", "h3"]})
    create(client, "b", host="h1", ha={"hosts": ["h1", "h2", "h3"], "preferred": "h2"})
    create(client, "c", host="h1", ha={"hosts": ["h1"]})
    plan = client.get(f"{API}/ha/plan", params={"fail": "h1"}).json()
    assert {p["vm"]: p["to"] for p in plan["restart"]} == {"a": "h3", "b": "h2"}
    assert [w["vm"] for w in plan["waits"]] == ["c"]
    assert "allowed hosts (h1)" in plan["waits"][0]["reason"]


@pytest.mark.parametrize(
    ("fail", "status", "field"),
    [("h1,nosuch", 409, "fail"), ("h1,", 422, "fail"), ("H1", 422, "fail")],
)
def test_ha_plan_refuses_bad_hosts_naming_fail(
    api: tuple[TestClient, MemoryStore], fail: str, status: int, field: str
) -> None:
    client, _ = api
    r = client.get(f"{API}/ha/plan", params={"fail": fail})
    assert r.status_code == status, r.text
    named = [e["field"] for e in r.json()["errors"]] if status == 422 else [r.json()["field"]]
    assert named == [field]


def test_ha_settings_change_the_grace_not_the_ttl(api: tuple[TestClient, MemoryStore]) -> None:
    client, store = api
    assert client.get(f"{API}/ha/settings").json() == {
        "lease_ttl_s": 5,
        "grace_s": 2.0,
        "stabilisation_s": 60.0,
        "path_interval_s": 1.0,
        "path_misses": 3,
        "path_up_s": 5.0,
    }
    r = client.put(f"{API}/ha/settings", json={"grace_s": 3, "stabilisation_s": 120.5})
    assert r.status_code == 200, r.text
    assert client.get(f"{API}/ha/settings").json() == {
        "lease_ttl_s": 5,
        "grace_s": 3.0,
        "stabilisation_s": 120.5,
        "path_interval_s": 1.0,
        "path_misses": 3,
        "path_up_s": 5.0,
    }
    events = client.get(f"{API}/events", params={"object": "cluster/ha"}).json()
    assert events[-1]["action"] == "settings"
    rev = store.revision()
    for body, field in (
        ({"grace_s": -1}, "grace_s"),
        ({"path_interval_s": -1}, "path_interval_s"),  # a negative period
        ({"path_misses": 0}, "path_misses"),
        ({"stabilisation_s": "60"}, "stabilisation_s"),
        ({"lease_ttl_s": 10}, "lease_ttl_s"),
    ):
        r = client.put(f"{API}/ha/settings", json=body)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text
    assert store.revision() == rev


def test_ha_plan_leaves_a_migrating_vm_to_its_migration(
    api: tuple[TestClient, MemoryStore],
) -> None:
    client, store = api
    create(client, "moving", host="h1")
    create(client, "staying", host="h1")
    m = Migration(vm="moving", task="0123456789ab", source="h1", target="h2", started_at=1.0)
    store.commit([], [put(keys.MIGRATIONS + "moving", m)])
    plan = client.get(f"{API}/ha/plan", params={"fail": "h1"}).json()
    assert [p["vm"] for p in plan["restart"]] == ["staying"]
    assert plan["not_recovered"] == ["moving"]


def test_a_migration_keeps_to_the_allowed_hosts(api: tuple[TestClient, MemoryStore]) -> None:
    client, store = api
    create(client, "a", ha={"hosts": ["h1", "h2"], "preferred": "h1"})
    running = VMStatus(name="a", host="h1", state=VMState.RUNNING, updated_at=1.0)
    store.commit([], [put(keys.VMSTATUS + "a", running)])  # as its agent reports it
    rev = store.revision()
    r = client.post(f"{API}/vms/a/migrate", json={"to": "h3"})
    assert r.status_code == 409 and "allowed hosts (h1, h2)" in r.json()["detail"], r.text
    assert store.revision() == rev
