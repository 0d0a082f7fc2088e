"""Network-path failover end to end in a 3-host lab: each agent pings the router and the NAS
for real (ICMP inside the lab's namespaces); a host whose public link is cut turns
``degraded`` and its HA VMs are live-migrated away (the guest never reboots, its heartbeat
is silent at most 2 s); when the link is back, ``failback`` VMs return after the
stabilisation period and the others stay; the router down for everyone moves nothing.

Every test samples every host's running domains every 200 ms for its whole length and fails
if a VM was ever seen running on two hosts at once."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator

import pytest

from kumo.chaos import domain_doubles
from kumo.lab.heartbeats import HeartbeatTail
from kumo.lab.plan import LabPlan
from kumo.lab.sampler import RunningSampler
from tests.lab.conftest import VMs, kumo, last_heartbeat


@pytest.fixture
def sampler(plan: LabPlan) -> Iterator[RunningSampler]:
    s = RunningSampler(plan).start()  # running only: a migration's paused target is not a run
    try:
        yield s
    finally:
        s.stop()
    assert domain_doubles(s.windows) == []
    assert all(s.samples.values()), "a sampler saw nothing: the check above proved nothing"


@pytest.fixture
def quick_failback() -> Iterator[None]:
    """A 20 s stabilisation period instead of 60 s, for the test's length; put back after."""
    kumo("ha", "settings", "--stabilisation", "20")
    try:
        yield
    finally:
        kumo("ha", "settings", "--stabilisation", "60", check=False)


def hosts() -> dict[str, dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(kumo("host", "list", "-o", "json").stdout)
    return {str(h["name"]): h for h in rows}


def path_state(host: str, net: str) -> str | None:
    paths = hosts()[host].get("paths")
    return str(paths[net]["state"]) if isinstance(paths, dict) else None


def vm_row(name: str) -> dict[str, object]:
    rows: list[dict[str, object]] = json.loads(kumo("vm", "list", "-o", "json").stdout)
    return next(r for r in rows if r["name"] == name)


def seen(tail: HeartbeatTail, vm: str) -> int:
    return len({(b.boot, b.n) for b in tail.beats if b.vm == vm})


def wait_for(what: str, cond: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.5)


def all_paths_up() -> bool:
    return all(
        isinstance(h.get("paths"), dict)
        and all(h["paths"][n]["state"] == "up" for n in ("public", "storage"))  # type: ignore[index]
        for h in hosts().values()
    )


def test_every_host_reports_both_paths_up(plan: LabPlan) -> None:
    wait_for("every host's public and storage paths up", all_paths_up, timeout=60)
    h = hosts()["h1"]
    assert h["paths"]["public"]["targets"] == ["198.18.0.1"]  # type: ignore[index]
    assert h["paths"]["storage"]["targets"] == ["198.18.1.10"]  # type: ignore[index]


def test_a_host_cut_from_the_public_network_has_its_ha_vms_moved_live_and_back(
    plan: LabPlan, vms: VMs, sampler: RunningSampler, quick_failback: None
) -> None:
    wait_for("every path up", all_paths_up, timeout=60)
    vms.create("np1", "--host", "h1", "--preferred", "h1", "--failback", "--priority", "10")
    vms.create("np2", "--host", "h1")
    vms.create("np3", "--host", "h1", "--ha", "off")
    boots = {vm: last_heartbeat(vm)[0] for vm in ("np1", "np2")}
    tail = HeartbeatTail(plan, ["np1", "np2"]).start()  # every host's serial logs, every 0.25 s
    try:
        wait_for("heartbeats read", lambda: all(seen(tail, vm) >= 3 for vm in boots), timeout=30)
        kumo("lab", "fault", "cut", "h1", "public")
        try:
            wait_for("h1 degraded", lambda: hosts()["h1"]["state"] == "degraded", timeout=60)
            reason = str(hosts()["h1"]["degraded"]["reason"])  # type: ignore[index]
            assert reason.startswith("public path of h1 down since"), reason
            for vm in ("np1", "np2"):
                wait_for(f"{vm} moved off h1", lambda vm=vm: vm_row(vm)["host"] != "h1")
                wait_for(f"{vm} running", lambda vm=vm: vm_row(vm)["state"] == "running")
            assert vm_row("np3")["host"] == "h1" and vm_row("np3")["state"] == "running"
            assert hosts()["h1"]["schedulable"] is False
        finally:
            kumo("lab", "fault", "heal", "h1", timeout=180)
        wait_for("h1 up again", lambda: hosts()["h1"]["state"] == "up", timeout=60)
        wait_for("np1 back on h1 (failback)", lambda: vm_row("np1")["host"] == "h1", timeout=150)
        wait_for("np1 running on h1", lambda: vm_row("np1")["state"] == "running")
        n = seen(tail, "np1")
        wait_for("np1 heard on h1", lambda: seen(tail, "np1") >= n + 3, timeout=30)
    finally:
        tail.stop()
    assert vm_row("np2")["host"] != "h1"  # no failback: it stays where it went
    for vm, boot in boots.items():
        beats = sorted({(b.boot, b.n): b.seen_at for b in tail.beats if b.vm == vm}.items())
        assert {b for (b, _), _ in beats} == {boot}, (vm, beats[-5:])  # never rebooted
        hosts_seen = {b.host for b in tail.beats if b.vm == vm}
        assert len(hosts_seen) >= 2, (vm, hosts_seen)  # it did move, and was heard where it went
        times = sorted(t for _, t in beats)
        silent = max(b - a for a, b in itertools.pairwise(times))
        assert silent <= 2.0, f"{vm}: heartbeat silent {silent:.2f} s"
    tasks = json.loads(kumo("task", "list", "-o", "json").stdout)
    moves = [t for t in tasks if t["kind"] == "vm.migrate" and t["target"] in ("vm/np1", "vm/np2")]
    away = [t for t in moves if t["reason"].startswith("public path of h1 down since")]
    assert {t["target"] for t in away} == {"vm/np1", "vm/np2"}, moves
    assert all(t["state"] == "succeeded" for t in moves), moves


def test_the_router_down_for_everyone_moves_nothing(
    plan: LabPlan, vms: VMs, sampler: RunningSampler
) -> None:
    wait_for("every path up", all_paths_up, timeout=60)
    vms.create("rd1", "--host", "h2")
    kumo("lab", "fault", "router-down")
    try:
        wait_for(
            "every host's public path down",
            lambda: all(path_state(h, "public") == "down" for h in hosts()),
            timeout=60,
        )
        wait_for(
            "the leader says nothing moves",
            lambda: any(
                "nothing is moved" in e["message"]
                for e in json.loads(kumo("events", "--object", "cluster", "-o", "json").stdout)
            ),
            timeout=30,
        )
        assert all(h["state"] == "up" for h in hosts().values()), hosts()
        assert vm_row("rd1")["host"] == "h2" and vm_row("rd1")["state"] == "running"
    finally:
        kumo("lab", "fault", "router-up")
    wait_for("every path up again", all_paths_up, timeout=60)
    assert vm_row("rd1")["host"] == "h2"
    assert sampler.hosts_running("rd1") == {"h2"}
