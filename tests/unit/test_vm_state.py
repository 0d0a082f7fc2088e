"""A VM whose host is down shows ``unknown``, not its host's last word, in every read path:
the service (cached and direct), the REST API and the CLI; and its reported state again once
the host's agent holds a lease."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from kumo.cli import cluster as cli
from kumo.cli.client import Client, Settings
from kumo.model.vm import VMState, VMStatus
from kumo.server.app import create_app
from kumo.server.auth import bootstrap
from kumo.server.schemas import VMCreate
from kumo.server.service import ClusterService
from kumo.sim.cluster import define_basics, register_hosts, sim_host
from kumo.store import keys
from kumo.store.cache import StoreCache
from kumo.store.memory import MemoryStore
from kumo.store.records import put

DOWN = "host h1 is down (no live agent lease); last reported running"


@dataclass
class Cluster:
    store: MemoryStore
    svc: ClusterService
    api: TestClient
    now: list[float]  # the store's clock: leases expire by it

    def states(self) -> set[tuple[str, str]]:
        """(state, message) of web1 as every read path shows it."""
        listed = next(v for v in self.svc.vms() if v.name == "web1")
        one = self.svc.vm("web1")
        api_list = self.api.get("/api/v1/vms").json()[0]
        api_one = self.api.get("/api/v1/vms/web1").json()
        return {
            (listed.state, listed.message),
            (one.state, one.message),
            (api_list["state"], api_list["message"]),
            (api_one["state"], api_one["message"]),
        }


@pytest.fixture(params=["direct", "cache"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    token = bootstrap(store)
    assert token
    cache = StoreCache(store) if request.param == "cache" else None
    if cache:
        cache.start()
    svc = ClusterService(store, view=cache)
    define_basics(svc)
    register_hosts(store, [sim_host("h1")], ttl=10)
    register_hosts(store, [sim_host("h2")], ttl=1000)
    svc.create_vm(VMCreate(name="web1", image="img", host="h1"), "t")
    running = VMStatus(name="web1", host="h1", state=VMState.RUNNING, updated_at=0.0)
    store.commit([], [put(keys.VMSTATUS + "web1", running)])  # as h1's agent reports it
    api = TestClient(create_app(svc))
    api.headers["Authorization"] = f"Bearer {token}"
    yield Cluster(store, svc, api, now)
    if cache:
        cache.stop()


def test_a_vm_on_a_dead_host_is_unknown_until_the_host_is_back(cluster: Cluster) -> None:
    assert cluster.states() == {("running", "")}
    cluster.now[0] = 11.0  # h1's lease expires: its agent stopped renewing it
    assert cluster.states() == {("unknown", DOWN)}
    assert cluster.svc.host("h1").state == "down"
    register_hosts(cluster.store, [sim_host("h1")], ttl=10)  # the agent is back
    assert cluster.states() == {("running", "")}


def test_the_last_report_and_its_message_are_kept(cluster: Cluster) -> None:
    crashed = VMStatus(
        name="web1", host="h1", state=VMState.CRASHED, message="qemu died", updated_at=1.0
    )
    cluster.store.commit([], [put(keys.VMSTATUS + "web1", crashed)])
    cluster.now[0] = 11.0
    assert cluster.states() == {
        ("unknown", "host h1 is down (no live agent lease); last reported crashed (qemu died)")
    }


def test_the_cli_shows_unknown(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.now[0] = 11.0
    client = Client(Settings("http://testserver", ""))
    client.http = cluster.api
    cluster.api.base_url = "http://testserver/api/v1"
    monkeypatch.setattr(cli, "_client", lambda url, token: client)
    cli.vm_list(output="json")
    listed = json.loads(capsys.readouterr().out)
    assert [(v["name"], v["state"], v["message"]) for v in listed] == [("web1", "unknown", DOWN)]
    cli.vm_list(output="table")
    table = capsys.readouterr().out
    assert "unknown" in table and "running" not in table.replace("last reported running", "")
