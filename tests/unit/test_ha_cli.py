"""The HA commands of the CLI against a real server on loopback (the in-memory store): the
create flags and `vm ha` reach the VM's spec, `vm show` prints the policy, `host fence`
needs --confirm, `ha status|plan|settings` print what the API says."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import uvicorn
from typer.testing import CliRunner

from kumo.cli import cluster
from kumo.cli import ha as ha_cli
from kumo.cli import profile as profile_cli
from kumo.model.host import Degraded, HostPaths, NetPath, PathState, PathStatus, Pool
from kumo.model.profile import InstallProfile
from kumo.model.vm import VMSpec
from kumo.server.app import create_app
from kumo.server.auth import bootstrap
from kumo.server.service import ClusterService
from kumo.sim.cluster import define_basics, register_hosts, sim_host
from kumo.store import keys
from kumo.store.base import Delete
from kumo.store.memory import MemoryStore
from kumo.store.records import load, put

cli = typer.Typer()
cli.add_typer(cluster.vm_app, name="vm")
cli.add_typer(cluster.host_app, name="host")
cli.add_typer(ha_cli.app, name="ha")
cli.add_typer(cluster.pool_app, name="pool")
cli.add_typer(profile_cli.app, name="profile")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[dict[str, str], MemoryStore]]:
    store = MemoryStore()
    token = bootstrap(store)
    assert token
    for h in ("h1", "h2", "h3"):
        register_hosts(store, [sim_host(h, cpus=2, memory_mib=1024)])
    service = ClusterService(store)
    define_basics(service)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        threading.Event().wait(0.01)
    yield {"KUMO_URL": f"http://127.0.0.1:{port}", "KUMO_TOKEN": token}, store
    srv.should_exit = True
    thread.join(10)


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={**env, "KUMO_CONFIG": "/nonexistent"})
    assert result.exit_code == 0, result.output
    return result.output


def spec_ha(store: MemoryStore, vm: str) -> dict[str, object]:
    found = load(store, VMSpec, keys.VMS + vm)
    assert found is not None
    return found[0].ha.model_dump(mode="json")


def test_create_flags_and_vm_ha_reach_the_spec(
    server: tuple[dict[str, str], MemoryStore],
) -> None:
    env, store = server
    run(env, "vm", "create", "c1", "--image", "img", "--memory", "128", "--ha", "off",
        "--priority", "100", "--hosts", "h1,h2", "--preferred", "h1", "--failback",
        "--max-restart", "2", "--max-relocate", "0")  # fmt: skip
    assert spec_ha(store, "c1") == {
        "mode": "off",
        "priority": 100,
        "hosts": ["h1", "h2"],
        "preferred": "h1",
        "failback": True,
        "max_restart": 2,
        "max_relocate": 0,
    }
    shown = run(env, "vm", "show", "c1")
    assert "off, priority 100, hosts h1,h2, preferred h1, failback" in " ".join(shown.split())
    # vm ha changes what it is given and keeps the rest
    printed = run(env, "vm", "ha", "c1", "--policy", "restart", "--no-failback", "--hosts", "")
    assert "HA restart, priority 100" in printed
    assert spec_ha(store, "c1") | {"max_restart": 2} == {
        "mode": "restart",
        "priority": 100,
        "hosts": [],
        "preferred": "h1",
        "failback": False,
        "max_restart": 2,
        "max_relocate": 0,
    }


def test_a_bad_value_is_an_error_naming_the_field(
    server: tuple[dict[str, str], MemoryStore],
) -> None:
    env, _ = server
    result = CliRunner().invoke(
        cli,
        ["vm", "create", "c2", "--image", "img", "--priority", "5000"],
        env={**env, "KUMO_CONFIG": "/nonexistent"},
    )
    assert result.exit_code == 1 and "ha.priority:" in result.output


def test_fence_status_plan_settings(server: tuple[dict[str, str], MemoryStore]) -> None:
    env, store = server
    run(env, "vm", "create", "p1", "--image", "img", "--memory", "128", "--host", "h3",
        "--priority", "7")  # fmt: skip
    refused = CliRunner().invoke(cli, ["host", "fence", "h3"], env=env)
    assert refused.exit_code == 1 and "--confirm" in refused.output
    assert store.get(keys.FENCED + "h3") is None
    plan = " ".join(run(env, "ha", "plan", "--fail", "h3").split())
    assert "failed hosts: h3" in plan and "p1 │ 7 │ h3 │" in plan
    store.commit([], [Delete(keys.ALIVE + "h3")])
    assert "fenced at" in run(env, "host", "fence", "h3", "--confirm")
    status = " ".join(run(env, "ha", "status").split())
    assert "confirmed by api:admin" in status and "recovering" in status
    assert "grace 2 s" in " ".join(run(env, "ha", "settings").split())
    assert "grace 3.5 s" in " ".join(run(env, "ha", "settings", "--grace", "3.5").split())
    out = " ".join(run(env, "host", "list", "-o", "json").split())
    assert '"fenced": {' in out
    table = " ".join(run(env, "host", "list").split())
    assert "fenced: confirmed by api:admin" in table  # why it is fenced, in the list
    paths = " ".join(run(env, "ha", "settings", "--path-misses", "4", "--path-up", "8").split())
    assert "down after 4 misses, up after 8 s of answers" in paths
    assert "grace 3.5 s" in paths  # the other timings kept


def test_host_list_shows_each_hosts_paths_and_why_it_is_degraded(
    server: tuple[dict[str, str], MemoryStore],
) -> None:
    env, store = server
    now = 1000.0
    down = PathStatus(state=PathState.DOWN, targets=("198.18.0.1",), since=now)
    up = PathStatus(state=PathState.UP, targets=("198.18.1.10",), since=now)
    store.commit(
        [],
        [
            put(keys.PATHS + "h1", HostPaths(host="h1", public=down, storage=up, at=now)),
            put(
                keys.DEGRADED + "h1",
                Degraded(host="h1", path=NetPath.PUBLIC, since=now, reason="public gone", at=now),
            ),
        ],
    )
    try:
        table = " ".join(run(env, "host", "list").split())
        assert "public down, storage up" in table and "degraded: public gone" in table
        assert "h1 │ degraded │ False" in table
    finally:
        store.commit([], [Delete(keys.PATHS + "h1"), Delete(keys.DEGRADED + "h1")])


def test_pool_create_names_the_nas_and_the_nbd_server(
    server: tuple[dict[str, str], MemoryStore],
) -> None:
    env, store = server
    run(env, "pool", "create", "nbdp", "--path", "/p/nbd", "--nas", "198.18.1.10",
        "--nbd", "198.18.1.10:10809")  # fmt: skip
    found = load(store, Pool, keys.POOLS + "nbdp")
    assert found is not None and (found[0].nas, found[0].nbd) == (
        ("198.18.1.10",),
        "198.18.1.10:10809",
    )
    assert "198.18.1.10:10809" in run(env, "pool", "list")


def test_profile_create_list_show_delete(
    server: tuple[dict[str, str], MemoryStore], tmp_path: Path
) -> None:
    env, store = server
    template = tmp_path / "ks.j2"
    template.write_text("text\nreboot\n%post\ncurl -fsS {{ callback_url }}\n%end\n")
    run(env, "profile", "create", "rocky9", "--kind", "kickstart",
        "--kernel", "http://198.18.0.1/vmlinuz", "--initrd", "http://198.18.0.1/initrd.img",
        "--answer-template", str(template), "--arg", "console=ttyS0",
        "--var", "tz=UTC")  # fmt: skip
    found = load(store, InstallProfile, keys.PROFILES + "rocky9")
    assert found is not None
    assert (found[0].args, found[0].variables) == (("console=ttyS0",), {"tz": "UTC"})
    assert "rocky9" in run(env, "profile", "list")
    assert "{{ callback_url }}" in run(env, "profile", "show", "rocky9")
    run(env, "profile", "delete", "rocky9")
    assert load(store, InstallProfile, keys.PROFILES + "rocky9") is None
    bad = CliRunner().invoke(
        cli, ["profile", "create", "x", "--kind", "kickstart", "--kernel", "http://a/k",
              "--initrd", "http://a/i", "--answer-template", str(template), "--var", "novalue"],
        env={**env, "KUMO_CONFIG": "/nonexistent"},
    )  # fmt: skip
    assert bad.exit_code != 0 and "NAME=VALUE" in bad.output
