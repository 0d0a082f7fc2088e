"""Every route needs a token, except the few meant to be open: the test walks the OpenAPI
document (so a new route is covered the day it is added) and the app's own routes (so a route
hidden from the document is too)."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from kumo.server.app import create_app
from kumo.server.auth import bootstrap
from kumo.server.service import ClusterService
from kumo.sim.cluster import define_basics, register_hosts, sim_host
from kumo.store.memory import MemoryStore

OPEN_IN_DOCUMENT = {("GET", "/healthz")}
OPEN_OUTSIDE_DOCUMENT = {"/api/v1/openapi.json", "/api/v1/docs", "/api/v1/docs/static"}
# A value each path parameter accepts, so that only the token can be at fault.
PATH_VALUES = {"name": "web1", "task_id": "0123456789ab"}
NO_TOKEN: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer kumo_wrong"},
    {"Authorization": "Basic YWRtaW46YWRtaW4="},
]


@pytest.fixture(scope="module")
def client() -> TestClient:
    store = MemoryStore()
    token = bootstrap(store)
    assert token
    register_hosts(store, [sim_host("h1")])
    service = ClusterService(store)
    define_basics(service)
    client = TestClient(create_app(service))
    # The right token works, so a 401 below is the token's doing.
    assert client.get("/api/v1/vms", headers={"Authorization": f"Bearer {token}"}).is_success
    return client


def _operations(client: TestClient) -> list[tuple[str, str]]:
    doc = client.get("/api/v1/openapi.json").json()
    return [(m.upper(), p) for p, ops in doc["paths"].items() for m in ops]


def test_every_documented_route_refuses_a_missing_or_wrong_token(client: TestClient) -> None:
    operations = _operations(client)
    assert len(operations) >= 25  # the walk covers the whole API, not an empty document
    guarded = [op for op in operations if op not in OPEN_IN_DOCUMENT]
    for method, path in guarded:
        url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
        for headers in NO_TOKEN:
            # A body the route would take, so a route that lost its guard would answer 2xx
            # or 4xx for other reasons, never 401.
            r = client.request(method, url, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json() == {"detail": "unauthorized", "field": "authorization"}
            assert r.headers["WWW-Authenticate"] == "Bearer"


def test_the_document_says_which_routes_need_a_token(client: TestClient) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if (method.upper(), path) in OPEN_IN_DOCUMENT:
                assert "security" not in op and "401" not in op["responses"]
            else:
                assert op["security"] == [{"HTTPBearer": []}], (method, path)
                assert "401" in op["responses"], (method, path)


def test_the_open_routes_answer_without_a_token(client: TestClient) -> None:
    assert client.get("/healthz").json()["ok"] is True
    assert client.get("/api/v1/openapi.json").json()["info"]["title"] == "kumo"
    assert client.get("/api/v1/docs").status_code == 200


def test_no_route_hides_from_the_walk(client: TestClient) -> None:
    """Routes left out of the document are only the document, the docs page and its files."""
    documented = {p for _, p in _operations(client)}
    hidden = set()
    # Through the routers the app includes (FastAPI keeps them as included routers).
    for route in iter_route_contexts(client.app.router.routes):  # type: ignore[attr-defined]
        if isinstance(route.original_route, APIRoute):
            if route.path not in documented:
                hidden.add(route.path)
        else:  # the document's own route, the docs' static files (a Mount)
            hidden.add(route.path or repr(route))
    assert hidden == OPEN_OUTSIDE_DOCUMENT
