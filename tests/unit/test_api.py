"""The REST API on the in-memory store: validation, auth, placement refusals, commands."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kumo.server.app import create_app
from kumo.server.auth import bootstrap
from kumo.server.service import ClusterService
from kumo.sim.cluster import register_hosts, sim_host
from kumo.store import keys
from kumo.store.cache import StoreCache
from kumo.store.memory import MemoryStore


@pytest.fixture(params=["direct", "cache"])
def api(request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, MemoryStore]]:
    store = MemoryStore()
    token = bootstrap(store)
    assert token and bootstrap(store) is None  # only once
    register_hosts(store, [sim_host(h, cpus=2, memory_mib=1024) for h in ("h1", "h2", "h3")])
    cache = StoreCache(store) if request.param == "cache" else None
    if cache:
        cache.start()
    client = TestClient(create_app(ClusterService(store, view=cache)))
    client.headers["Authorization"] = f"Bearer {token}"
    assert client.post("/api/v1/pools", json={"name": "shared", "path": "/pool"}).status_code == 201
    assert (
        client.post("/api/v1/networks", json={"name": "public", "bridge": "br0"}).status_code == 201
    )
    assert (
        client.post(
            "/api/v1/images",
            json={"name": "testguest", "pool": "shared", "path": "images/testguest.qcow2"},
        ).status_code
        == 201
    )
    yield client, store
    if cache:
        cache.stop()


def vm(name: str, **kw: object) -> dict[str, object]:
    return {"name": name, "image": "testguest", "memory_mib": 128, **kw}


def test_no_or_wrong_token_is_401_without_detail(api: tuple[TestClient, MemoryStore]) -> None:
    client, _ = api
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
        r = client.get("/api/v1/vms", headers={**headers} if headers else {"Authorization": ""})
        assert r.status_code == 401
        assert r.json() == {"detail": "unauthorized", "field": "authorization"}
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").status_code == 200


def test_vms_spread_across_hosts(api: tuple[TestClient, MemoryStore]) -> None:
    client, _ = api
    for i in range(9):
        r = client.post("/api/v1/vms", json=vm(f"web{i}"))
        assert r.status_code == 201, r.text
    hosts = [v["host"] for v in client.get("/api/v1/vms").json()]
    assert sorted(hosts.count(h) for h in ("h1", "h2", "h3")) == [3, 3, 3]


def test_anti_affinity_refusal_creates_nothing(api: tuple[TestClient, MemoryStore]) -> None:
    client, store = api
    for i in range(3):
        assert client.post("/api/v1/vms", json=vm(f"g{i}", anti_affinity="grp")).status_code == 201
    rev = store.revision()
    r = client.post("/api/v1/vms", json=vm("g3", anti_affinity="grp"))
    assert r.status_code == 409
    assert r.json()["detail"].startswith("no valid host: anti-affinity group grp")
    assert store.revision() == rev and store.get(keys.VMS + "g3") is None


def test_too_big_vm_names_memory(api: tuple[TestClient, MemoryStore]) -> None:
    client, store = api
    r = client.post("/api/v1/vms", json=vm("huge", memory_mib=999999))
    assert r.status_code == 409
    assert "not enough free memory (needs 999999 MiB" in r.json()["detail"]
    assert store.get(keys.VMS + "huge") is None and store.range(keys.TASKS) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (vm("Bad_Name"), "name"),
        (vm("-x"), "name"),
        (vm("web1\n"), "name"),
        (vm("ok", vcpus=0), "vcpus"),
        (vm("ok", vcpus=True), "vcpus"),
        (vm("ok", memory_mib=-5), "memory_mib"),
        (vm("ok", disk_gib=0), "disk_gib"),
        (vm("ok", colour="blue"), "colour"),
        (vm("ok", ssh_keys=["not a key"]), "ssh_keys.0"),
        (vm("ok", ssh_keys=["ssh-ed25519 AAAA\nruncmd: [reboot]"]), "ssh_keys.0"),
        (vm("ok", networks=["public", "Bad"]), "networks.1"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    api: tuple[TestClient, MemoryStore], body: dict[str, object], field: str
) -> None:
    client, store = api
    rev = store.revision()
    r = client.post("/api/v1/vms", json=body)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]
    assert r.json()["detail"].startswith(f"{field}: ")
    assert store.revision() == rev


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (vm("ok", image="nosuch"), "image"),
        (vm("ok", pool="nosuch"), "pool"),
        (vm("ok", networks=["nosuch"]), "networks"),
        (vm("ok", host="nosuch"), "host"),
    ],
)
def test_unknown_reference_is_409_naming_the_field(
    api: tuple[TestClient, MemoryStore], body: dict[str, object], field: str
) -> None:
    """A valid request the cluster's state refuses (it may pass once the object exists)."""
    client, store = api
    rev = store.revision()
    r = client.post("/api/v1/vms", json=body)
    assert r.status_code == 409, r.text
    assert r.json()["field"] == field and r.json()["detail"].startswith(f"{field}: no ")
    assert store.revision() == rev


def test_duplicate_name_is_409(api: tuple[TestClient, MemoryStore]) -> None:
    client, _ = api
    assert client.post("/api/v1/vms", json=vm("dup")).status_code == 201
    r = client.post("/api/v1/vms", json=vm("dup"))
    assert r.status_code == 409 and "vm dup already exists" in r.json()["detail"]
    r = client.post("/api/v1/pools", json={"name": "shared", "path": "/x"})
    assert r.status_code == 409


def test_power_commands_make_tasks_and_supersede(api: tuple[TestClient, MemoryStore]) -> None:
    client, _ = api
    created = client.post("/api/v1/vms", json=vm("p1")).json()
    stop = client.post("/api/v1/vms/p1/stop", json={"force": True})
    assert stop.status_code == 202 and stop.json()["kind"] == "vm.stop"
    first = client.get(f"/api/v1/tasks/{created['task']['id']}").json()
    assert first["state"] == "cancelled" and stop.json()["id"] in first["message"]
    r = client.post("/api/v1/vms/p1/reboot")
    assert r.status_code == 409 and "is stopped" in r.json()["detail"]
    assert client.post("/api/v1/vms/nosuch/start").status_code == 404
    assert client.delete("/api/v1/vms/p1").status_code == 202
    spec = client.get("/api/v1/vms/p1").json()["spec"]
    assert spec["deleting"] is True
    events = client.get("/api/v1/events", params={"object": "vm/p1"}).json()
    assert [e["action"] for e in events][:2] == ["placed", "stop"]


def test_openapi_is_served(api: tuple[TestClient, MemoryStore]) -> None:
    client, _ = api
    assert client.get("/api/v1/openapi.json").json()["info"]["title"] == "kumo"
