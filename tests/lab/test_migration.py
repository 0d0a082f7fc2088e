"""`kumo vm migrate` end to end in a 3-host lab: live moves around the cluster with the
guest's heartbeat watched from the router, cancel on a slowed link, bad input. Each test
makes the VMs it needs (the `vms` fixture deletes them)."""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any

from kumo.lab.namespaces import STATE_DIR
from kumo.lab.plan import LabPlan
from tests.lab.conftest import HttpPoller, VMs, heartbeat_after, kumo, last_heartbeat


def console(vm: str) -> str:
    return kumo("vm", "console-log", vm, "--bytes", "4000", check=False).stdout


def wait_console(vm: str, pattern: str, timeout: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, console(vm))
        if m:
            return m
        time.sleep(1)
    raise AssertionError(f"{vm}: no {pattern!r} in {timeout:.0f} s: {console(vm)[-800:]}")


def host_of(vm: str) -> str:
    return str(json.loads(kumo("vm", "show", vm, "-o", "json").stdout)["host"])


def domains(host: str) -> set[str]:
    return set(kumo("lab", "exec", host, "--", "virsh", "list", "--all", "--name").stdout.split())


def elsewhere(plan: LabPlan, vm: str) -> tuple[str, str]:
    """The VM's host and another host to move it to."""
    source = host_of(vm)
    return source, next(h.name for h in plan.hosts if h.name != source)


def task(tid: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kumo("task", "show", tid, "-o", "json").stdout)
    return out


SETTLED = 8  # heartbeats: the guest's boot is over and it dirties little memory


def settled(name: str) -> tuple[str, int]:
    """The VM's newest heartbeat once its boot is over. A guest migrated seconds after it
    booted is busy (the agent measured 64 MiB/s): kumo then picks auto-converge, which under
    TCG has left a guest dead on arrival (ADR 0006). These tests are about kumo's handling of
    faults, so they move settled guests, as users mostly do."""
    first = last_heartbeat(name)
    heartbeat_after(name, first, lines=SETTLED - first[1])
    return last_heartbeat(name)


def booted(vms: VMs, name: str, *args: str) -> tuple[str, int]:
    """A VM made for the test, running, settled, with its newest heartbeat."""
    vms.create(name, *args)
    return settled(name)


def test_live_migration_round_trip_keeps_the_guest_running(plan: LabPlan, vms: VMs) -> None:
    vms.create("rt")
    ip = wait_console("rt", r"KUMO-GUEST dhcp eth0 (\S+)").group(1)
    boot = settled("rt")[0]
    start = host_of("rt")
    others = [h.name for h in plan.hosts if h.name != start]
    poller = HttpPoller(ip)
    try:
        poller.wait_more(10)
        for target in (*others, start):
            out = kumo("vm", "migrate", "rt", "--to", target, "--wait").stdout
            assert f"now runs on {target}" in out, out
            assert host_of("rt") == target
            assert "rt" in domains(target)
            assert all("rt" not in domains(h.name) for h in plan.hosts if h.name != target)
            poller.wait_more(10)  # answering at its new home
    finally:
        poller.stop()
    samples = poller.samples
    assert samples and {b for _, b, _ in samples} == {boot}  # never rebooted
    gaps = [(b[0] - a[0], a[2], b[2]) for a, b in itertools.pairwise(samples)]
    assert max(gaps)[0] <= 2.0, f"heartbeat silent {max(gaps)[0]:.2f} s"
    assert all(0 <= n2 - n1 <= 2 for _, n1, n2 in gaps), gaps
    tasks = json.loads(kumo("task", "list", "-o", "json").stdout)
    migrations = [t for t in tasks if t["kind"] == "vm.migrate" and t["target"] == "vm/rt"]
    assert len(migrations) == 3 and all(t["state"] == "succeeded" for t in migrations)
    assert all(t["migration"]["bytes_total"] > 0 for t in migrations)
    assert all(t["migration"]["downtime_ms"] is not None for t in migrations)
    # the domain exists on both hosts during each switch-over: never taken for a stray
    events = json.loads(kumo("events", "--object", "vm/rt", "--limit", "200", "-o", "json").stdout)
    assert not [e for e in events if e["action"].startswith("stray")], events


def test_scheduler_chooses_the_target(plan: LabPlan, vms: VMs) -> None:
    vms.create("pin", "--host", "h1")
    # pinned to h1 at create: without --to the scheduler may not move it
    proc = kumo("vm", "migrate", "pin", check=False)
    assert proc.returncode != 0 and "pinned to host h1" in proc.stderr
    booted(vms, "free")
    src = host_of("free")
    kumo("vm", "migrate", "free", "--wait")
    assert host_of("free") != src
    assert host_of("pin") == "h1"


def test_cancel_on_a_slow_link_leaves_the_vm_untouched(plan: LabPlan, vms: VMs) -> None:
    ref = booted(vms, "cx")
    source, target = elsewhere(plan, "cx")
    kumo("lab", "fault", "slow", source, "storage", "2mbit")
    try:
        out = kumo("vm", "migrate", "cx", "--to", target).stdout
        tid = re.search(r"task (\w+)", out)
        assert tid is not None
        deadline = time.monotonic() + 60
        while not (task(tid.group(1)).get("migration") or {}).get("bytes_processed"):
            assert time.monotonic() < deadline, task(tid.group(1))
            time.sleep(0.5)
        kumo("task", "cancel", tid.group(1))
        t = wait_done(tid.group(1), 60)
        assert t["state"] == "cancelled", t["message"]
    finally:
        kumo("lab", "fault", "heal", source)
    assert host_of("cx") == source
    assert "cx" not in domains(target)
    assert heartbeat_after("cx", ref) == ref[0]


def test_bad_migrations_are_refused(plan: LabPlan, vms: VMs) -> None:
    vms.create("bm")
    for args, message in (
        (["nosuch", "--to", "h2"], "vm nosuch does not exist"),
        (["bm", "--to", "h9"], "to: no host named h9"),
    ):
        proc = kumo("vm", "migrate", *args, check=False)
        assert proc.returncode != 0 and message in " ".join(proc.stderr.split()), proc.stderr


def test_a_cpu_model_no_host_provides_is_refused(plan: LabPlan) -> None:
    hosts = json.loads(kumo("host", "list", "-o", "json").stdout)
    assert all("qemu64" in h["record"]["cpu_models"] for h in hosts)  # TCG's own
    args = ["vm", "create", "epyc", "--image", "testguest", "--cpu-model", "EPYC-Milan"]
    proc = kumo(*args, check=False)
    assert proc.returncode != 0
    assert "CPU model EPYC-Milan incompatible" in " ".join(proc.stderr.split()), proc.stderr
    assert "epyc" not in kumo("vm", "list").stdout


def test_same_host_and_stopped_vm_are_refused(plan: LabPlan, vms: VMs) -> None:
    vms.create("sh")
    here = host_of("sh")
    proc = kumo("vm", "migrate", "sh", "--to", here, check=False)
    assert proc.returncode != 0 and f"already runs on {here}" in proc.stderr
    kumo("vm", "stop", "sh", "--force", "--wait")
    proc = kumo("vm", "migrate", "sh", check=False)
    assert proc.returncode != 0 and "live migration moves a running VM" in proc.stderr


def start_migration(vm: str, target: str) -> str:
    out = kumo("vm", "migrate", vm, "--to", target).stdout
    tid = re.search(r"task (\w+)", out)
    assert tid is not None, out
    deadline = time.monotonic() + 60
    while not (task(tid.group(1)).get("migration") or {}).get("bytes_processed"):
        assert time.monotonic() < deadline, task(tid.group(1))
        time.sleep(0.3)
    return tid.group(1)


def wait_done(tid: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (t := task(tid))["state"] not in ("cancelled", "failed", "succeeded"):
        assert time.monotonic() < deadline, t
        time.sleep(0.5)
    return t


def running_on(vm: str, plan: LabPlan) -> list[str]:
    """The hosts whose libvirtd lists ``vm`` running (a dead host's lists nothing)."""
    args = ["virsh", "list", "--state-running", "--name"]
    return [
        h.name
        for h in plan.hosts
        if vm in kumo("lab", "exec", h.name, "--", *args, check=False).stdout.split()
    ]


def test_target_libvirtd_dying_mid_migration_leaves_the_vm_on_the_source(
    plan: LabPlan, vms: VMs
) -> None:
    ref = booted(vms, "tl")
    source, target = elsewhere(plan, "tl")
    kumo("lab", "fault", "slow", source, "storage", "4mbit")
    try:
        tid = start_migration("tl", target)
        kumo("lab", "fault", "kill-libvirtd", target)
        t = wait_done(tid, 120)
    finally:
        kumo("lab", "fault", "heal", source)
        kumo("lab", "fault", "heal", target)
    assert t["state"] == "failed", t["message"]
    assert f"runs on {source} as before" in t["message"], t["message"]
    assert host_of("tl") == source and running_on("tl", plan) == [source]
    deadline = time.monotonic() + 30  # libvirtd, back, kills the half-received domain
    while "tl" in domains(target):
        assert time.monotonic() < deadline, kumo("lab", "exec", target, "--", "virsh", "list")
        time.sleep(1)
    assert heartbeat_after("tl", ref) == ref[0]
    # The target's agent connected to the new libvirtd: it reports the VM once it arrives.
    kumo("vm", "migrate", "tl", "--to", target, "--wait")
    deadline = time.monotonic() + 30
    while (status := json.loads(kumo("vm", "show", "tl", "-o", "json").stdout)["status"])[
        "host"
    ] != target:
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status["state"] == "running"


def test_source_agent_restarting_mid_migration_ends_in_a_true_state(
    plan: LabPlan, vms: VMs
) -> None:
    ref = booted(vms, "sa")
    source, target = elsewhere(plan, "sa")
    kumo("lab", "fault", "slow", source, "storage", "16mbit")
    try:
        tid = start_migration("sa", target)
        kumo("lab", "fault", "kill-agent", source)
        time.sleep(1)  # the fault's length: the job runs on with no agent watching it
        kumo("lab", "fault", "heal", source)  # starts the agent again; the link stays slow
        kumo("lab", "fault", "slow", source, "storage", "16mbit")
        t = wait_done(tid, 180)
    finally:
        kumo("lab", "fault", "heal", source)
    # libvirtd carried the job on; the new agent watched it end and recorded where it went.
    # Mostly it succeeds; when the job itself failed (under TCG a guest has died at the
    # switch-over, ADR 0006), kumo must say so and keep the VM where it really is.
    events = json.loads(kumo("events", "--object", "vm/sa", "--limit", "60", "-o", "json").stdout)
    after = [e for e in events if e["time"] >= t["created_at"]]
    if t["state"] == "failed":
        assert "sa runs on" in t["message"] and host_of("sa") == source, (t, after)
        deadline = time.monotonic() + 90
        while running_on("sa", plan) != [source]:
            assert time.monotonic() < deadline, (after, _agent_log(source))
            time.sleep(1)
        return
    assert t["state"] == "succeeded", t["message"]
    assert running_on("sa", plan) == [host_of("sa")] == [target]
    # kumo never started it again: no start, crash or stray action on it after the request
    acted = [e for e in after if e["action"] in ("start", "stray", "notice", "self-fenced")]
    assert acted == [], (after, _agent_log(source))
    boot = heartbeat_after("sa", ref)
    if boot != ref[0]:
        # The guest booted again by itself: under TCG, QEMU 7.2 sometimes delivers a busy
        # guest's memory corrupted and its kernel panics after the switch-over (ADR 0006,
        # seen here about 1 run in 5). Not kumo's doing (checked above); shown, not hidden.
        log = kumo("vm", "console-log", "sa", "--bytes", "60000").stdout
        assert "Kernel panic" in log or "end trace" in log, log[-3000:]


def _agent_log(host: str) -> str:
    """The host's agent log without the HTTP client's lines (for a failure's message)."""
    text = (STATE_DIR / host / "agent.log").read_text()
    return "\n".join(line for line in text.splitlines() if "HTTP Request" not in line)[-4000:]


def test_cold_migration_moves_a_stopped_vm(plan: LabPlan, vms: VMs) -> None:
    vms.create("cold", "--no-start")
    source, target = elsewhere(plan, "cold")
    deadline = time.monotonic() + 60  # the agent defines the domain
    while "cold" not in domains(source):
        assert time.monotonic() < deadline, kumo("vm", "show", "cold").stdout
        time.sleep(0.5)
    proc = kumo("vm", "migrate", "cold", "--to", target, check=False)
    assert proc.returncode != 0 and "use --cold" in proc.stderr
    out = kumo("vm", "migrate", "cold", "--cold", "--to", target, "--wait").stdout
    assert f"now is on {target}" in out, out
    assert host_of("cold") == target
    assert "cold" in domains(target) and "cold" not in domains(source)
    kumo("vm", "start", "cold", "--wait")
    assert running_on("cold", plan) == [target]
    proc = kumo("vm", "migrate", "cold", "--cold", check=False)
    assert proc.returncode != 0 and "cold migration moves a stopped VM" in proc.stderr


def test_a_host_local_disk_moves_with_the_vm(plan: LabPlan, vms: VMs) -> None:
    local = "/var/lib/kumo/pools/local"  # each host's own directory
    for h in plan.hosts:
        kumo(
            "lab",
            "exec",
            h.name,
            "--",
            "sh",
            "-c",
            f"mkdir -p {local}/images && cp /var/lib/kumo/pools/shared/images/testguest.qcow2 "
            f"{local}/images/",
        )
    kumo("pool", "create", "local", "--kind", "local-dir", "--path", local)
    kumo("image", "import", "localguest", "--pool", "local", "--path", "images/testguest.qcow2")
    deadline = time.monotonic() + 60  # agents look at the pools every 30 s
    while not all(
        "local" in h["record"]["pools"]
        for h in json.loads(kumo("host", "list", "-o", "json").stdout)
    ):
        assert time.monotonic() < deadline
        time.sleep(2)
    vms.names.append("lv")
    kumo("vm", "create", "lv", "--image", "localguest", "--memory", "128", "--host", "h2", "--wait")
    ref = settled("lv")
    out = kumo("vm", "migrate", "lv", "--to", "h3", "--wait").stdout
    assert "now runs on h3" in out, out
    disk = f"{local}/vms/lv.qcow2"
    assert kumo("lab", "exec", "h3", "--", "test", "-f", disk, check=False).returncode == 0
    assert kumo("lab", "exec", "h2", "--", "test", "-e", disk, check=False).returncode != 0
    assert running_on("lv", plan) == ["h3"]
    assert heartbeat_after("lv", ref) == ref[0]


def test_source_host_dying_mid_migration_ends_the_task(plan: LabPlan, vms: VMs) -> None:
    """The target's agent ends the migration once the source's lease is gone; then HA, which
    leaves a VM on the move to its migration, runs it again on a live host, once."""
    booted(vms, "sd")
    source, target = elsewhere(plan, "sd")
    kumo("lab", "fault", "slow", source, "storage", "4mbit")
    try:
        tid = start_migration("sd", target)
        kumo("lab", "fault", "kill-host", source)
        t = wait_done(tid, 120)
        assert t["state"] == "failed", t["message"]
        assert f"source host {source} went down mid-migration" in t["message"], t["message"]
        deadline = time.monotonic() + 90
        while len(on := running_on("sd", plan)) != 1 or on == [source]:
            assert time.monotonic() < deadline, kumo("vm", "show", "sd").stdout
            time.sleep(1)
    finally:
        kumo("lab", "fault", "heal", source)
    assert host_of("sd") == on[0] != source
    deadline = time.monotonic() + 60  # rejoined: the source runs no copy of it
    while host_state(source) != "up":
        assert time.monotonic() < deadline, host_state(source)
        time.sleep(1)
    assert running_on("sd", plan) == on


def host_state(name: str) -> str:
    hosts = json.loads(kumo("host", "list", "-o", "json").stdout)
    return str(next(h["state"] for h in hosts if h["name"] == name))


def test_maintenance_moves_every_vm_away_and_back(plan: LabPlan, vms: VMs) -> None:
    for h in ("h2", "h3"):
        kumo("host", "maintenance", "enter", h, "--wait")
    for i in range(4):
        vms.create(f"d{i}")
    assert {host_of(f"d{i}") for i in range(4)} == {"h1"}  # the only schedulable host
    for h in ("h2", "h3"):
        kumo("host", "maintenance", "exit", h)
    refs = {f"d{i}": settled(f"d{i}") for i in range(4)}

    kumo("migration-policy", "set", "--max-per-host", "1")
    try:
        out = kumo("host", "maintenance", "enter", "h1", "--wait", timeout=600).stdout
    finally:
        kumo("migration-policy", "set", "--max-per-host", "2")
    assert "in maintenance" in out
    events = json.loads(kumo("events", "--limit", "400", "-o", "json").stdout)
    queued = [e for e in events if e["action"] == "migrate" and "queued:" in e["message"]]
    assert len(queued) >= 3, queued  # one at a time from h1: three waited their turn
    where = {f"d{i}": host_of(f"d{i}") for i in range(4)}
    assert set(where.values()) <= {"h2", "h3"}, (
        where,
        kumo("vm", "list").stdout,
        kumo("events", "--limit", "80").stdout,
    )
    assert not {f"d{i}" for i in range(4)} & domains("h1")
    hosts = {h["name"]: h for h in json.loads(kumo("host", "list", "-o", "json").stdout)}
    assert hosts["h1"]["maintenance"] == "maintenance" and not hosts["h1"]["schedulable"]

    kumo("host", "maintenance", "exit", "h1", "--wait", timeout=600)
    assert {host_of(f"d{i}") for i in range(4)} == {"h1"}
    for vm, ref in refs.items():  # moved twice, never rebooted
        assert heartbeat_after(vm, ref) == ref[0]
