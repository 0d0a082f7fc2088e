"""Errors keep the documented shape and name their field; the document says what the routes
answer (our own 422 schema, JSON errors on the text console log, the event stream); the
power routes take no action parameter; the CLI shows the field the server names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kumo.cli.client import Client, ClientError, Settings
from kumo.model.migration import MigrationOverride, MigrationPolicy, MigrationSettings
from kumo.model.vm import Power, VMState
from kumo.server.app import create_app
from kumo.server.auth import bootstrap
from kumo.server.schemas import ErrorBody, ValidationErrorBody, VMCreate
from kumo.server.service import ClusterService
from kumo.sim.cluster import define_basics, register_hosts, sim_host
from kumo.store.base import Entry, StoreUnavailable
from kumo.store.memory import MemoryStore
from tests.unit.test_migration import Cluster

Agent = Callable[[httpx.Request], httpx.Response]


class Api:
    def __init__(self, agent: Agent | None = None) -> None:
        self.store = MemoryStore()
        token = bootstrap(self.store)
        assert token
        register_hosts(self.store, [sim_host("h1")])
        self.service = ClusterService(self.store)
        define_basics(self.service)
        self.service.create_vm(VMCreate(name="web1", image="img", memory_mib=128), "test")
        self.agent: Agent = agent or (lambda r: httpx.Response(200, text="web1 login: \n"))
        agents = httpx.Client(transport=httpx.MockTransport(lambda r: self.agent(r)))
        self.client = TestClient(create_app(self.service, agents=agents))
        self.client.headers["Authorization"] = f"Bearer {token}"


@pytest.fixture
def api() -> Api:
    return Api()


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    (ValidationErrorBody if status == 422 else ErrorBody).model_validate(body)
    return body


def _fields(r: httpx.Response) -> list[str]:
    return [e["field"] for e in _error(r, 422)["errors"]]


def test_a_missing_body_is_named_body(api: Api) -> None:
    assert _fields(api.client.post("/api/v1/pools")) == ["body"]
    assert _fields(api.client.put("/api/v1/migration-policy")) == ["body"]


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/api/v1/pools", b"{bad", "body: not JSON: Expecting property name"),
        ("/api/v1/pools", b"[1,", "body: not JSON: Expecting value at character 3"),
        ("/api/v1/vms/web1/stop", b"{", "body: not JSON"),  # an optional body too
        ("/api/v1/pools", b"\xff\xfe{", "body: not UTF-8"),
        ("/api/v1/pools", b'{"name": "\xe9"}', "body: not UTF-8: invalid continuation byte"),
        ("/api/v1/pools", '{"name": "p2", "path": "/p"}'.encode("utf-16"), "body: not UTF-8"),
    ],
)
def test_a_body_that_cannot_be_read_is_400_naming_body(
    api: Api, path: str, body: bytes, says: str
) -> None:
    """What the document's description says: 400 when the body is not UTF-8 or not JSON
    (a missing body breaks the schema: 422, above)."""
    r = api.client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert _error(r, 400)["field"] == "body"
    assert r.json()["detail"].startswith(says)


def test_400_is_declared_where_a_route_takes_a_body(api: Api) -> None:
    doc = api.client.get("/api/v1/openapi.json").json()
    assert "- 400: the body could not be read: not UTF-8, or not JSON" in doc["info"]["description"]
    declared = {
        (method, path): ("requestBody" in op, "400" in op["responses"])
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }
    assert {k for k, (body, bad) in declared.items() if body != bad} == set()
    assert declared[("delete", "/api/v1/vms/{name}")] == (False, False)
    assert declared[("post", "/api/v1/vms/{name}/stop")] == (True, True)


def test_a_field_called_path_keeps_its_name(api: Api) -> None:
    r = api.client.post("/api/v1/pools", json={"name": "p2", "path": "relative"})
    assert _fields(r) == ["path"]
    r = api.client.post("/api/v1/images", json={"name": "i2", "pool": "shared", "path": "../x"})
    assert _fields(r) == ["path"]
    assert "no leading '/', no empty or '..' part" in r.json()["detail"]


def test_nested_and_unknown_fields_are_named_in_full(api: Api) -> None:
    r = api.client.put("/api/v1/migration-policy", json={"policy": {"parallel": False}})
    assert _fields(r) == ["policy.parallel"]  # false is not 0: bodies are strict
    r = api.client.post("/api/v1/networks", json={"name": "n", "bridge": "br1", "": 1})
    assert _fields(r) == ["body"]  # an unknown key "" is the body's fault, not a nameless one


def test_json_numbers_are_read_as_the_schema_reads_them(api: Api) -> None:
    r = api.client.post("/api/v1/vms", json={"name": "web2", "image": "img", "vcpus": 2.0})
    assert r.status_code == 201 and r.json()["vm"]["vcpus"] == 2
    assert _fields(api.client.post("/api/v1/vms", json={"name": "w", "image": "img", "vcpus": 1.5}))
    assert _fields(api.client.post("/api/v1/vms", json={"name": "w", "image": "img", "vcpus": "2"}))


def test_a_path_name_breaking_the_rule_is_422_naming_it(api: Api) -> None:
    assert _fields(api.client.get("/api/v1/vms/Web1")) == ["name"]
    assert _fields(api.client.get("/api/v1/tasks/nosuch")) == ["task_id"]
    assert _error(api.client.get("/api/v1/vms/web9"), 404)["field"] == "name"
    assert _error(api.client.get("/api/v1/hosts/h9"), 404)["field"] == "name"
    assert _error(api.client.get("/api/v1/tasks/0123456789ab"), 404)["field"] == "task_id"


def test_a_refusal_names_the_object_of_the_path(api: Api) -> None:
    assert api.client.post("/api/v1/vms/web1/stop", json={"force": True}).status_code == 202
    r = api.client.post("/api/v1/vms/web1/reboot")
    assert _error(r, 409) == {
        "detail": "vm web1 is stopped; start it instead of rebooting it",
        "field": "name",
    }
    r = api.client.post("/api/v1/tasks/0123456789ab/cancel")
    assert _error(r, 404)["field"] == "task_id"
    assert _error(api.client.get("/api/v1/nosuch"), 404)["field"] == "url"


def test_405_allows_every_method_of_the_path(api: Api) -> None:
    r = api.client.put("/api/v1/vms/web1")
    assert _error(r, 405)["field"] == "method"
    assert r.headers["Allow"] == "DELETE, GET"
    assert api.client.patch("/api/v1/migration-policy").headers["Allow"] == "GET, PUT"


def test_etcd_down_is_503_in_the_error_shape(api: Api) -> None:
    class Down(MemoryStore):
        def get(self, key: str) -> Entry | None:
            raise StoreUnavailable("etcd at 127.0.0.1:2379 is unreachable")

    client = TestClient(create_app(ClusterService(Down())))
    r = client.get("/api/v1/vms", headers={"Authorization": "Bearer kumo_x"})
    assert "kumo changed nothing" in _error(r, 503)["detail"]


def test_power_routes_take_no_action_parameter(api: Api) -> None:
    """``POST /vms/web1/start?_action=stop`` once stopped the VM: the action came from a
    parameter with a default."""
    r = api.client.post("/api/v1/vms/web1/start", params={"_action": "stop", "action": "stop"})
    assert r.status_code == 202 and r.json()["kind"] == "vm.start"
    assert api.client.get("/api/v1/vms/web1").json()["spec"]["power"] == Power.RUNNING
    doc = api.client.get("/api/v1/openapi.json").json()
    for action in ("start", "stop", "reboot"):
        op = doc["paths"][f"/api/v1/vms/{{name}}/{action}"]["post"]
        assert [p["name"] for p in op["parameters"]] == ["name"]


def test_the_document_publishes_our_error_schemas(api: Api) -> None:
    doc = api.client.get("/api/v1/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["ValidationErrorBody"]["required"]) == {"detail", "errors"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if int(status) < 400:
                    continue
                model = "ValidationErrorBody" if status == "422" else "ErrorBody"
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{model}"}, (method, path)


def test_console_log_is_text_and_its_errors_json(api: Api) -> None:
    r = api.client.get("/api/v1/vms/web1/console-log")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text == "web1 login: \n"
    api.agent = lambda r: httpx.Response(404)
    assert _error(api.client.get("/api/v1/vms/web1/console-log"), 404)["field"] == "name"

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api.agent = unreachable
    r = api.client.get("/api/v1/vms/web1/console-log")
    assert _error(r, 502)["field"] == "agent" and "unreachable" in r.json()["detail"]
    doc = api.client.get("/api/v1/openapi.json").json()
    answers = doc["paths"]["/api/v1/vms/{name}/console-log"]["get"]["responses"]
    assert list(answers["200"]["content"]) == ["text/plain"]
    assert {"404", "502"} <= set(answers)


def test_the_event_stream_is_documented_as_it_is_sent(api: Api) -> None:
    class EndingWatches(MemoryStore):
        def watch(self, prefix: str, start_revision: int) -> Any:
            w = super().watch(prefix, start_revision)
            w.cancel()  # the stream sends the past events and ends
            return w

    store = EndingWatches()
    token = bootstrap(store)
    service = ClusterService(store)
    define_basics(service)
    client = TestClient(create_app(service))
    r = client.get(
        "/api/v1/events", params={"follow": "true"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.headers["content-type"] == "application/x-ndjson"
    lines: Iterator[str] = iter(r.text.splitlines())
    assert [line.startswith('{"time":') for line in lines] == [True] * 3  # pool, net, image
    doc = client.get("/api/v1/openapi.json").json()
    content = doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "application/x-ndjson"}
    assert content["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/Event"}


def test_the_cli_shows_the_field_the_server_names(api: Api) -> None:
    cli = Client(Settings("http://testserver", ""))
    cli.http = api.client
    with pytest.raises(ClientError) as err:
        cli.call("GET", "/api/v1/vms/web9")
    assert err.value.status == 404 and str(err.value) == "name: vm web9 does not exist"
    with pytest.raises(ClientError) as err:
        cli.call("POST", "/api/v1/vms", json={"name": "web3", "image": "nosuch"})
    assert str(err.value).startswith("image: no image named nosuch")
    with pytest.raises(ClientError) as err:
        cli.call("POST", "/api/v1/vms", json={"name": "Web3", "image": "img"})
    assert err.value.status == 422 and str(err.value).startswith("name: 'Web3' is not a valid")


def test_a_policy_that_breaks_the_downtime_rule_alone_is_422_naming_the_field(api: Api) -> None:
    """Wrong whatever the cluster holds: 422, on every route that takes a policy, before the
    VM's state is looked at (web1 is not running, so a migration would be a 409)."""
    bad = {"downtime_ms": 500, "max_downtime_ms": 100}
    assert _fields(api.client.put("/api/v1/vms/web1/migration-policy", json=bad)) == [
        "max_downtime_ms"
    ]
    r = api.client.post("/api/v1/vms/web1/migrate", json={"policy": bad})
    assert _fields(r) == ["policy.max_downtime_ms"]
    r = api.client.put("/api/v1/migration-policy", json={"policy": bad})
    assert _fields(r) == ["policy.max_downtime_ms"]
    assert "100 is below downtime_ms 500" in r.json()["detail"]
    assert api.client.get("/api/v1/vms/web1").json()["spec"]["migration"] is None


def test_a_policy_fine_alone_that_conflicts_with_the_cluster_is_409_naming_its_field(
    api: Api,
) -> None:
    """The cluster's policy (downtime 300 ms rising to 2000) refuses these now; the same
    request passes once the cluster's policy changes."""

    def put(body: dict[str, int]) -> httpx.Response:
        r: httpx.Response = api.client.put("/api/v1/vms/web1/migration-policy", json=body)
        return r

    r = put({"downtime_ms": 5000})
    assert _error(r, 409)["field"] == "downtime_ms"
    assert "5000 is above max_downtime_ms 2000 of the cluster's policy" in r.json()["detail"]
    assert _error(put({"max_downtime_ms": 100}), 409)["field"] == "max_downtime_ms"
    cluster = {"policy": {"downtime_ms": 300, "max_downtime_ms": 10000}}
    assert api.client.put("/api/v1/migration-policy", json=cluster).status_code == 200
    r = put({"downtime_ms": 5000})
    assert r.status_code == 200 and r.json()["downtime_ms"] == 5000


def test_a_migration_names_the_request_field_or_the_vm_whose_policy_conflicts() -> None:
    """Over the cluster's and the VM's policy: the request's field when it sets one; the VM
    (the path's name) when the VM's stored override no longer fits the cluster's policy."""
    c = Cluster()
    c.svc.create_vm(VMCreate(name="web1", image="img", memory_mib=128, host="h1"), "t")
    c.tick()  # web1 runs on h1
    token = bootstrap(c.store)
    assert token
    client = TestClient(create_app(c.svc), headers={"Authorization": f"Bearer {token}"})

    def migrate(body: dict[str, Any]) -> httpx.Response:
        r: httpx.Response = client.post("/api/v1/vms/web1/migrate", json=body)
        return r

    r = migrate({"to": "h2", "policy": {"downtime_ms": 5000}})
    assert _error(r, 409)["field"] == "policy.downtime_ms"
    assert "of the cluster's and the VM's policy" in r.json()["detail"]
    c.svc.migrations.set_settings(
        MigrationSettings(policy=MigrationPolicy(max_downtime_ms=9000)), "t"
    )
    c.svc.migrations.set_vm_policy("web1", MigrationOverride(downtime_ms=5000), "t")
    c.svc.migrations.set_settings(MigrationSettings(), "t")  # the ceiling drops to 2000
    r = migrate({"to": "h2"})
    assert _error(r, 409)["field"] == "name"
    assert r.json()["detail"].startswith("the cluster's and the VM's policy: max_downtime_ms")
    assert migrate({"to": "h2", "policy": {"max_downtime_ms": 6000}}).status_code == 202


def test_the_vm_state_is_an_enum_of_every_state_the_view_shows(api: Api) -> None:
    doc = api.client.get("/api/v1/openapi.json").json()
    state = doc["components"]["schemas"]["VMView"]["properties"]["state"]
    assert state["type"] == "string"
    assert set(state["enum"]) == {s.value for s in VMState} | {"pending", "unplaced"}
    assert {"unknown", "pending", "unplaced"} <= set(state["enum"])
    assert api.client.get("/api/v1/vms/web1").json()["state"] == "pending"  # placed, unreported


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"cidr": "198.18.0.0/24", "gateway": "10.0.0.1"}, "gateway", "outside the network"),
        ({"gateway": "198.18.0.1"}, "gateway", "needs the network's cidr"),
        ({"cidr": "198.18.0.0/24", "gateway": "router"}, "gateway", "not an IPv4 or IPv6"),
        ({"cidr": "198.18.0.0/33"}, "cidr", "pattern"),
    ],
)
def test_a_ping_target_outside_its_network_is_422_naming_the_field(
    api: Api, body: dict[str, str], field: str, says: str
) -> None:
    r = api.client.post("/api/v1/networks", json={"name": "n2", "bridge": "br1", **body})
    assert _fields(r) == [field]
    assert says in r.json()["detail"]
    assert api.client.get("/api/v1/networks").json()[-1]["name"] != "n2"  # nothing written


def test_a_network_and_a_pool_keep_their_ping_targets(api: Api) -> None:
    r = api.client.post(
        "/api/v1/networks",
        json={"name": "n2", "bridge": "br1", "cidr": "10.1.0.7/24", "gateway": "10.1.0.1"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["cidr"] == "10.1.0.0/24" and r.json()["gateway"] == "10.1.0.1"
    r = api.client.post("/api/v1/pools", json={"name": "p2", "path": "/p", "nas": ["x"]})
    assert _fields(r) == ["nas.0"]
    r = api.client.post("/api/v1/pools", json={"name": "p2", "path": "/p", "nas": ["10.2.0.5"]})
    assert r.status_code == 201 and r.json()["nas"] == ["10.2.0.5"]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"nbd": "198.18.1.10"}, "nbd", "pattern"),
        ({"nbd": "198.18.1.10:70000"}, "nbd", "pattern"),
        ({"nbd": "nas1:10809"}, "nbd", "pattern"),
        ({"nbd": "198.18.1.10:10809", "kind": "local-dir"}, "nbd", "only a shared-dir pool"),
    ],
)
def test_a_bad_nbd_server_is_422_naming_the_field(
    api: Api, body: dict[str, str], field: str, says: str
) -> None:
    r = api.client.post("/api/v1/pools", json={"name": "p2", "path": "/p", **body})
    assert _fields(r) == [field]
    assert says in r.json()["detail"]
    assert "p2" not in [p["name"] for p in api.client.get("/api/v1/pools").json()]


def test_a_pool_keeps_its_nbd_server(api: Api) -> None:
    body = {"name": "p2", "path": "/p", "nas": ["198.18.1.10"], "nbd": "198.18.1.10:10809"}
    r = api.client.post("/api/v1/pools", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["nbd"] == "198.18.1.10:10809"
