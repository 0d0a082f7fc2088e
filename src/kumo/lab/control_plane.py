"""kumo itself in the lab: `kumo server` in ctl, `kumo agent` on every host, and the
cluster's first objects (the shared pool, the public network, the golden image)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from kumo.lab.namespaces import RUN_DIR, STATE_DIR, enter, pids_in_netns
from kumo.lab.plan import PUBLIC_NET, SHARED_POOL_PATH, LabPlan, Network, Node
from kumo.lab.services import NBD_PORT, spawn
from kumo.lab.shell import LabError

API_PORT = 8080
AGENT_PORT = 8776
CLIENT_CONFIG = RUN_DIR / "client.json"
# The server replicas `fault kill-leader` killed, for `heal ctl` to start again.
KILLED_SERVERS = RUN_DIR / "killed-servers.json"
TOKEN_FILE = STATE_DIR / "ctl" / "admin-token"
IMAGE = "testguest"
NBD_IMAGE = "testguest-nbd"  # the same image in the nbd pool


def api_url(plan: LabPlan) -> str:
    return f"http://{plan.controller.address(Network.STORAGE)}:{API_PORT}"


def _kumo(*args: str) -> list[str]:
    return [sys.executable, "-m", "kumo", *args]


def start_server(plan: LabPlan, replica: int = 1, timeout: float = 30) -> None:
    ctl = plan.controller
    spawn(
        [
            *enter(ctl.netns),
            *_kumo(
                "server",
                "--etcd",
                plan.etcd_endpoint,
                "--listen",
                ctl.address(Network.STORAGE),
                "--port",
                str(API_PORT + replica - 1),
                "--token-file",
                str(TOKEN_FILE),
                "--ident",
                f"ctl-{replica}",
            ),
        ],
        str(STATE_DIR / "ctl" / f"server-{replica}.log"),
    )
    url = f"http://{ctl.address(Network.STORAGE)}:{API_PORT + replica - 1}/healthz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise LabError(
        f"kumo server in ctl did not answer within {timeout:.0f} s "
        f"(log: {STATE_DIR / 'ctl' / f'server-{replica}.log'})"
    )


def server_replicas(plan: LabPlan) -> dict[int, int]:
    """The ``kumo server`` replicas running in ``ctl``: replica number -> pid (the replica is
    its port less ``API_PORT`` plus one, as :func:`start_server` gives them)."""
    found: dict[int, int] = {}
    for pid in pids_in_netns(plan.controller.netns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kumo" in cmd and b"server" in cmd and b"--port" in cmd:
            port = cmd[cmd.index(b"--port") + 1]
            if port.isdigit():
                found[int(port) - API_PORT + 1] = pid
    return found


def replica_url(plan: LabPlan, replica: int) -> str:
    return f"http://{plan.controller.address(Network.STORAGE)}:{API_PORT + replica - 1}"


def leading_replica(plan: LabPlan, timeout: float = 10) -> int | None:
    """The running replica that says it leads (``/healthz``), waiting up to ``timeout`` for
    an election to end; None when none leads by then."""
    deadline = time.monotonic() + timeout
    while True:
        for replica in sorted(server_replicas(plan)):
            try:
                r = httpx.get(replica_url(plan, replica) + "/healthz", timeout=2)
                if r.json().get("this_replica_leads"):
                    return replica
            except (httpx.HTTPError, ValueError):
                continue
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def kill_server(plan: LabPlan, replica: int) -> None:
    """SIGKILL to one replica, noted in ``KILLED_SERVERS`` so that ``heal ctl`` restarts it."""
    pid = server_replicas(plan).get(replica)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    killed = killed_servers()
    KILLED_SERVERS.write_text(json.dumps(sorted({*killed, replica})))
    deadline = time.monotonic() + 10
    while replica in server_replicas(plan) and time.monotonic() < deadline:
        time.sleep(0.05)


def killed_servers() -> list[int]:
    try:
        return [int(r) for r in json.loads(KILLED_SERVERS.read_text())]
    except (OSError, ValueError):
        return []


def restart_killed_servers(plan: LabPlan) -> list[int]:
    """Start the replicas ``kill_server`` killed that are not running (replica 1 also when
    no replica runs at all: the lab's API must answer); returns those started."""
    running = server_replicas(plan)
    wanted = set(killed_servers()) | ({1} if not running else set())
    started = []
    for replica in sorted(wanted - set(running)):
        start_server(plan, replica)
        started.append(replica)
    KILLED_SERVERS.unlink(missing_ok=True)
    return started


def stop_server(plan: LabPlan, replica: int) -> None:
    """End one replica for good (SIGTERM, then SIGKILL): not a fault, nothing to heal."""
    pid = server_replicas(plan).get(replica)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while replica in server_replicas(plan):
        if time.monotonic() > deadline + 10:
            raise LabError(f"kumo server replica {replica} (pid {pid}) outlived SIGKILL")
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def start_agent(plan: LabPlan, host: Node, domain_type: str) -> None:
    spawn(
        [
            *enter(host.netns, host.name),
            *_kumo(
                "agent",
                "--etcd",
                plan.etcd_endpoint,
                "--host",
                host.name,
                "--address",
                host.address(Network.STORAGE),
                "--port",
                str(AGENT_PORT),
                "--domain-type",
                domain_type,
            ),
        ],
        str(STATE_DIR / host.name / "agent.log"),
    )


def start_watchdog(host: Node) -> None:
    """The host's ``kumo watchdog``: kills its HA guests when its agent stops feeding it."""
    spawn(
        [*enter(host.netns, host.name), *_kumo("watchdog", "--no-device")],
        str(STATE_DIR / host.name / "watchdog.log"),
    )


def _kumo_running(host: Node, command: bytes) -> bool:
    """Whether a ``kumo <command>`` process runs in the host."""
    for pid in pids_in_netns(host.netns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kumo" in cmd and command in cmd:
            return True
    return False


def watchdog_running(host: Node) -> bool:
    return _kumo_running(host, b"watchdog")


def agent_running(host: Node) -> bool:
    return _kumo_running(host, b"agent")


def write_client_config(plan: LabPlan) -> str:
    token = TOKEN_FILE.read_text().strip()
    fd = os.open(CLIENT_CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": api_url(plan), "token": token}, f)
    return token


def basics(plan: LabPlan) -> list[tuple[str, dict[str, object]]]:
    """The API requests that define the lab's first objects: the shared pool (with its NAS,
    nas1's storage address), the public network (its cidr and gateway, the router: what
    every agent's path monitor pings) and the golden test image."""
    return [
        (
            "/pools",
            {
                "name": "shared",
                "kind": "shared-dir",
                "path": SHARED_POOL_PATH,
                "nas": [plan.nas.address(Network.STORAGE)],
            },
        ),
        (
            "/pools",
            {
                "name": "nbd",
                "kind": "shared-dir",
                "path": f"{SHARED_POOL_PATH}/nbd",
                "nas": [plan.nas.address(Network.STORAGE)],
                "nbd": f"{plan.nas.address(Network.STORAGE)}:{NBD_PORT}",
            },
        ),
        (
            "/networks",
            {
                "name": "public",
                "bridge": "br0",
                "cidr": str(PUBLIC_NET),
                "gateway": plan.router.address(Network.PUBLIC),
            },
        ),
        (
            "/images",
            {"name": IMAGE, "pool": "shared", "path": f"images/{IMAGE}.qcow2", "size_gib": 1},
        ),
        (
            "/images",
            {"name": NBD_IMAGE, "pool": "nbd", "path": f"images/{IMAGE}.qcow2", "size_gib": 1},
        ),
    ]


def register_basics(plan: LabPlan, token: str) -> None:
    """Define :func:`basics` through the API (an object that exists already is left)."""
    h = {"Authorization": f"Bearer {token}"}
    base = api_url(plan) + "/api/v1"
    for path, body in basics(plan):
        r = httpx.post(base + path, json=body, headers=h, timeout=10)
        if r.status_code not in (201, 409):
            raise LabError(f"registering {path} {body['name']}: {r.status_code} {r.text}")


def wait_hosts(plan: LabPlan, token: str, timeout: float = 60) -> None:
    """Until every host's agent is registered, up and reaches the shared pool."""
    h = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    want = {n.name for n in plan.hosts}
    ready: set[str] = set()
    while time.monotonic() < deadline:
        r = httpx.get(api_url(plan) + "/api/v1/hosts", headers=h, timeout=5)
        ready = {
            x["name"] for x in r.json() if x["state"] == "up" and "shared" in x["record"]["pools"]
        }
        if want <= ready:
            return
        time.sleep(0.3)
    raise LabError(f"agents not ready within {timeout:.0f} s: {', '.join(sorted(want - ready))}")


def server_ok(plan: LabPlan) -> bool:
    try:
        return httpx.get(api_url(plan) + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
