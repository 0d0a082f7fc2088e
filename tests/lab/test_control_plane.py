"""The control plane end to end in a 3-host lab: kumo server in ctl, agents on the hosts,
real libvirtd/QEMU guests, driven through the `kumo` CLI as a user would."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import time
from pathlib import Path

import httpx

from kumo.lab import control_plane, services
from kumo.lab import lab as lab_mod
from kumo.lab.namespaces import STATE_DIR, pids_in_netns
from kumo.lab.plan import SHARED_POOL_PATH, LabPlan
from kumo.model.vm import Placement
from kumo.store import keys
from kumo.store.etcd import EtcdStore
from kumo.store.records import put
from tests.lab.conftest import VMs, heartbeat_after, kumo, last_heartbeat

BOOT = re.compile(r"KUMO-GUEST boot=(\S+) n=(\d+)")
DISKS = STATE_DIR / "nas1" / "export" / "vms"


def vm_json(name: str | None = None) -> list[dict[str, object]]:
    out = kumo("vm", "list", "-o", "json").stdout
    vms: list[dict[str, object]] = json.loads(out)
    return [v for v in vms if name is None or v["name"] == name]


def boot_id(name: str, timeout: float = 120) -> str:
    """The boot id in the VM's newest heartbeat, read through `kumo vm console-log`."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        proc = kumo("vm", "console-log", name, "--bytes", "2000", check=False)
        text = proc.stdout
        found = BOOT.findall(text)
        if found:
            return str(found[-1][0])
        time.sleep(1)
    raise AssertionError(f"{name}: no heartbeat within {timeout:.0f} s: {text[-500:]}")


def new_boot(name: str, old: str, timeout: float = 90) -> str:
    """Wait for a heartbeat with a boot id other than ``old``: the guest booted again."""
    deadline = time.monotonic() + timeout
    while (current := boot_id(name)) == old:
        assert time.monotonic() < deadline, f"{name} did not boot again"
        time.sleep(1)
    return current


def virsh_names(host: str, all_: bool = False) -> set[str]:
    args = ["virsh", "list", "--name"] + (["--all"] if all_ else [])
    return set(kumo("lab", "exec", host, "--", *args).stdout.split())


def kill_matching(netns: str, *words: bytes, sig: int = signal.SIGKILL) -> int:
    n = 0
    for pid in pids_in_netns(netns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(w in cmd for w in words):
            os.kill(pid, sig)
            n += 1
    return n


def test_nine_vms_spread_boot_and_run_in_libvirt(plan: LabPlan, vms: VMs) -> None:
    for i in range(1, 10):
        vms.create(f"vm{i}", "--vcpus", "1", wait=False)
    listed = vm_json()
    hosts = [str(v["host"]) for v in listed]
    assert sorted(hosts.count(h.name) for h in plan.hosts) == [3, 3, 3]
    for v in listed:
        boot_id(str(v["name"]))
    # cloud-init seed: each guest took its VM's name as hostname
    log = kumo("vm", "console-log", "vm5", "--bytes", "600").stdout
    assert re.search(r"KUMO-GUEST boot=\S+ n=\d+ host=vm5", log), log
    for h in plan.hosts:
        assert virsh_names(h.name) == {str(v["name"]) for v in listed if v["host"] == h.name}
    assert all(v["state"] == "running" for v in vm_json())


def test_stop_start_reboot_delete(plan: LabPlan, vms: VMs) -> None:
    vms.create("life1")
    host = str(vm_json("life1")[0]["host"])
    first = boot_id("life1")
    kumo("vm", "stop", "life1", "--wait")
    assert "life1" not in virsh_names(host) and "life1" in virsh_names(host, all_=True)
    assert vm_json("life1")[0]["state"] == "stopped"
    kumo("vm", "start", "life1", "--wait")
    assert "life1" in virsh_names(host)
    second = new_boot("life1", first)
    kumo("vm", "reboot", "life1", "--wait")
    third = new_boot("life1", second)
    kumo("vm", "reboot", "life1", "--force", "--wait")  # a hard reset
    new_boot("life1", third)
    assert (DISKS / "life1.qcow2").exists()
    kumo("vm", "delete", "life1", "--wait")
    assert "life1" not in virsh_names(host, all_=True)
    assert not (DISKS / "life1.qcow2").exists()
    assert vm_json("life1") == []


def qemu_of(netns: str, vm: str) -> list[int]:
    """The QEMU process(es) of ``vm`` in a host's namespace."""
    found = []
    for pid in pids_in_netns(netns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.startswith(f"guest={vm},".encode()) for a in cmd):
            found.append(pid)
    return found


def test_a_crashed_guest_is_started_again_and_says_so(plan: LabPlan, vms: VMs) -> None:
    vms.create("cr1")
    host = str(vm_json("cr1")[0]["host"])
    ref = last_heartbeat("cr1")
    [pid] = qemu_of(plan.host(host).netns, "cr1")
    os.kill(pid, signal.SIGKILL)  # QEMU dies under the guest
    assert heartbeat_after("cr1", ref) != ref[0]  # booted again
    events = json.loads(kumo("events", "--object", "vm/cr1", "--limit", "50", "-o", "json").stdout)
    assert any("the guest crashed" in e["message"] for e in events), events
    assert vm_json("cr1")[0]["state"] == "running"


def test_guests_get_the_clusters_cpu_baseline(plan: LabPlan, vms: VMs) -> None:
    hosts = json.loads(kumo("host", "list", "-o", "json").stdout)
    models = {h["record"]["cpu"]["model"] for h in hosts}
    assert len(models) == 1 and all(h["record"]["cpu"]["features"] for h in hosts), hosts
    vms.create("cpu1", "--no-start", wait=False)
    spec = json.loads(kumo("vm", "show", "cpu1", "-o", "json").stdout)["spec"]
    assert spec["cpu"]["model"] in models, spec
    host = str(vm_json("cpu1")[0]["host"])
    deadline = time.monotonic() + 60  # the agent defines the domain
    while "cpu1" not in virsh_names(host, all_=True):
        assert time.monotonic() < deadline, vm_json("cpu1")
        time.sleep(0.5)
    xml = kumo("lab", "exec", host, "--", "virsh", "dumpxml", "cpu1").stdout
    assert f"<model fallback='forbid'>{spec['cpu']['model']}</model>" in xml, xml


def test_a_stray_domain_is_removed_when_its_vm_is_placed_elsewhere(plan: LabPlan, vms: VMs) -> None:
    """HA's case: the VM's placement moves to another host while its old host still runs it.
    The old host's agent stops and undefines its copy (disk kept); the new host starts it."""
    vms.create("st1")
    old = str(vm_json("st1")[0]["host"])
    new = next(h.name for h in plan.hosts if h.name != old)
    ref = last_heartbeat("st1")
    EtcdStore(plan.etcd_endpoint).commit(
        [], [put(keys.PLACEMENT + "st1", Placement(host=new, at=time.time()))]
    )
    deadline = time.monotonic() + 60
    while "st1" in virsh_names(old, all_=True):
        assert time.monotonic() < deadline, kumo("events", "--object", "vm/st1").stdout
        time.sleep(0.5)
    events = json.loads(kumo("events", "--object", "vm/st1", "--limit", "50", "-o", "json").stdout)
    assert any(
        e["action"] == "stray-removed"
        and f"(placed on {new}) stopped and undefined on {old}" in e["message"]
        for e in events
    ), events
    assert (DISKS / "st1.qcow2").exists()
    assert heartbeat_after("st1", ref) != ref[0]  # booted again, on the new host
    assert str(vm_json("st1")[0]["host"]) == new and "st1" in virsh_names(new)


def _copy_of(xml: str, name: str) -> str:
    """A transient domain on the same disk as ``xml``'s: another name and uuid, no NIC."""
    xml = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", xml, count=1)
    xml = re.sub(r"<uuid>[^<]*</uuid>", "", xml, count=1)
    return re.sub(r"<interface .*?</interface>", "", xml, flags=re.S)


def _lease_held(disk: str) -> bool:
    """Whether some host's virtlockd holds the disk's lease: an fcntl lock on the lease file
    named by the SHA-256 of the disk's path, in the lockspace on the shared pool (virtlockd
    removes the file when it releases the lease)."""
    name = hashlib.sha256(disk.encode()).hexdigest()
    try:
        fd = os.open(DISKS.parent / ".kumo-lockspace" / name, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and our own lock with it
    return False


def test_a_second_host_cannot_open_a_running_vms_disk(
    plan: LabPlan, vms: VMs, tmp_path: Path
) -> None:
    """Disk safety below kumo, in two layers: QEMU's image locks and each host's virtlockd,
    which holds the disk lease of every domain it runs (lockspace on the shared pool) for as
    long as the host lives. A copy of the domain started by hand on another host is refused;
    once kumo stops the VM, the lease is free and the same copy starts."""
    vms.create("lk1")
    host = str(vm_json("lk1")[0]["host"])
    other = next(h.name for h in plan.hosts if h.name != host)
    disk = f"{SHARED_POOL_PATH}/vms/lk1.qcow2"
    assert _lease_held(disk)
    copy = tmp_path / "lk1-copy.xml"
    copy.write_text(
        _copy_of(kumo("lab", "exec", host, "--", "virsh", "dumpxml", "lk1").stdout, "lk1-copy")
    )
    refused = kumo("lab", "exec", other, "--", "virsh", "create", str(copy), check=False)
    assert refused.returncode != 0, refused.stdout
    assert 'Failed to get "write" lock' in refused.stderr or "is locked" in refused.stderr, (
        refused.stderr
    )
    kumo("vm", "stop", "lk1", "--wait")  # the lease goes with the domain
    assert not _lease_held(disk)
    started = kumo("lab", "exec", other, "--", "virsh", "create", str(copy), check=False)
    held_by_copy = _lease_held(disk)
    kumo("lab", "exec", other, "--", "virsh", "destroy", "lk1-copy", check=False)
    assert started.returncode == 0, started.stderr
    assert held_by_copy  # the other host's virtlockd took it


def test_anti_affinity_group_spreads_then_refuses(plan: LabPlan, vms: VMs) -> None:
    for i in range(1, 4):
        vms.create(f"aa{i}", "--anti-affinity", "grp", "--no-start", wait=False)
    assert len({v["host"] for v in vm_json() if str(v["name"]).startswith("aa")}) == 3
    tasks_before = kumo("task", "list", "-o", "json", "--limit", "1000").stdout
    proc = kumo(
        "vm",
        "create",
        "aa4",
        "--image",
        "testguest",
        "--memory",
        "128",
        "--anti-affinity",
        "grp",
        check=False,
    )
    assert proc.returncode != 0
    assert "no valid host: anti-affinity group grp" in " ".join(proc.stderr.split())
    assert vm_json("aa4") == []
    assert kumo("task", "list", "-o", "json", "--limit", "1000").stdout == tasks_before
    assert not (DISKS / "aa4.qcow2").exists()


def test_vm_larger_than_any_host_is_refused(plan: LabPlan) -> None:
    proc = kumo("vm", "create", "huge", "--image", "testguest", "--memory", "999999", check=False)
    assert proc.returncode != 0
    assert "not enough free memory (needs 999999 MiB" in " ".join(proc.stderr.split())
    assert vm_json("huge") == []
    assert kumo("vm", "show", "huge", check=False).returncode != 0


def test_bad_input_and_auth(plan: LabPlan, vms: VMs) -> None:
    vms.create("dup1", "--no-start", wait=False)
    url = control_plane.api_url(plan) + "/api/v1"
    token = control_plane.TOKEN_FILE.read_text().strip()
    h = {"Authorization": f"Bearer {token}"}
    # 422: the request breaks the published schema; each error names its field
    invalid: list[tuple[dict[str, object], str]] = [
        ({"name": "Bad!", "image": "testguest"}, "name"),
        ({"name": "ok\n", "image": "testguest"}, "name"),
        ({"name": "ok", "image": "testguest", "memory_mib": 0}, "memory_mib"),
        ({"name": "ok", "image": "testguest", "vcpus": -1}, "vcpus"),
    ]
    for body, field in invalid:
        r = httpx.post(f"{url}/vms", json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
        assert [e["field"] for e in r.json()["errors"]] == [field], (body, r.text)
    # 409: a valid request the cluster's state refuses; the field is named
    refused: list[tuple[dict[str, object], str]] = [
        ({"name": "ok", "image": "nosuch"}, "image"),
        ({"name": "ok", "image": "testguest", "networks": ["nosuch"]}, "networks"),
        ({"name": "ok", "image": "testguest", "pool": "nosuch"}, "pool"),
        ({"name": "dup1", "image": "testguest"}, "name"),
    ]
    for body, field in refused:
        r = httpx.post(f"{url}/vms", json=body, headers=h)
        assert r.status_code == 409 and r.json()["field"] == field, (body, r.text)
    assert "already exists" in r.json()["detail"]
    assert vm_json("ok") == []
    no_token: dict[str, str] = {}
    for wrong in (no_token, {"Authorization": "Bearer wrong"}):
        r = httpx.get(f"{url}/vms", headers=wrong)
        assert r.status_code == 401 and r.json()["detail"] == "unauthorized", r.text


def three_running(vms: VMs, prefix: str) -> dict[str, tuple[str, int]]:
    """One running VM a host (the lab is empty, so the scheduler spreads them), each with its
    newest heartbeat."""
    names = [vms.create(f"{prefix}{i}", wait=False) for i in range(1, 4)]
    return {n: last_heartbeat(n) for n in names}


def wait_agents_registered_after(plan: LabPlan, t: float, timeout: float = 60) -> None:
    """Until every host's record was written by an agent started after ``t`` (wall clock)."""
    deadline = time.monotonic() + timeout
    while True:
        hosts = json.loads(kumo("host", "list", "-o", "json").stdout)
        fresh = {
            h["name"] for h in hosts if h["state"] == "up" and h["record"]["registered_at"] > t
        }
        if fresh >= {h.name for h in plan.hosts}:
            return
        assert time.monotonic() < deadline, f"agents not back: {hosts}"
        time.sleep(0.5)


def assert_untouched(before: dict[str, tuple[str, int]]) -> None:
    """Each VM printed heartbeats well past ``before`` (an agent resync is 5 s) in the boot
    it had then, and is reported running."""
    for name, ref in before.items():
        assert heartbeat_after(name, ref, lines=8) == ref[0], f"{name} was restarted"
    deadline = time.monotonic() + 60
    while not all(vm_json(n)[0]["state"] == "running" for n in before):
        assert time.monotonic() < deadline, vm_json()
        time.sleep(0.5)


def test_restarting_server_and_agents_touches_no_vm(plan: LabPlan, vms: VMs) -> None:
    before = three_running(vms, "rs")
    killed_at = time.time()
    assert kill_matching(plan.controller.netns, b"server") >= 1
    for h in plan.hosts:
        assert kill_matching(h.netns, b"agent") == 1
    # the agents first, at once: an agent away longer than its lease (5 s) has its host's HA
    # VMs fenced by the watchdog, as it must (docs/control-plane.md, "Restarting kumo")
    domain_type = json.loads(lab_mod.STATE_FILE.read_text())["domain_type"]
    for h in plan.hosts:
        control_plane.start_agent(plan, h, domain_type)
    control_plane.start_server(plan)
    control_plane.wait_hosts(plan, control_plane.TOKEN_FILE.read_text().strip())
    wait_agents_registered_after(plan, killed_at)
    after = {n: last_heartbeat(n) for n in before}
    assert all(after[n][0] == before[n][0] for n in before), (before, after)
    assert_untouched(after)


def test_second_replica_takes_over_when_the_leader_dies(plan: LabPlan, vms: VMs) -> None:
    vms.create("rep1", "--no-start", wait=False)
    control_plane.start_server(plan, replica=2)
    base = control_plane.api_url(plan).rsplit(":", 1)[0]
    urls = {1: f"{base}:8080", 2: f"{base}:8081"}

    def leads(replica: int) -> bool:
        try:
            return bool(
                httpx.get(urls[replica] + "/healthz", timeout=2).json()["this_replica_leads"]
            )
        except httpx.HTTPError:
            return False

    deadline = time.monotonic() + 15
    while not (leads(1) or leads(2)):
        assert time.monotonic() < deadline, "no replica leads"
        time.sleep(0.2)
    leader = 1 if leads(1) else 2
    other = 3 - leader
    assert not leads(other)
    port = str(8080 + leader - 1).encode()
    assert kill_matching(plan.controller.netns, b"server", port) == 1
    killed_at = time.monotonic()
    while not leads(other):
        assert time.monotonic() - killed_at < 10, "the other replica did not take over"
        time.sleep(0.1)
    took = time.monotonic() - killed_at
    # the leader lease's TTL is 5 s; etcd expires leases on a 0.5 s tick
    assert took <= 5.5, f"took over after {took:.1f} s"
    token = control_plane.TOKEN_FILE.read_text().strip()
    r = httpx.get(urls[other] + "/api/v1/vms", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and "rep1" in {v["name"] for v in r.json()}
    # leave the lab as it was: replica 1 on the default port
    if leader == 1:
        control_plane.start_server(plan, replica=1)
        kill_matching(plan.controller.netns, b"server", b"8081")
        deadline = time.monotonic() + 30
        while not control_plane.server_ok(plan):
            assert time.monotonic() < deadline, "replica 1 did not come back"
            time.sleep(0.2)


def test_etcd_outage_leaves_vms_alone_and_converges(plan: LabPlan, vms: VMs) -> None:
    before = three_running(vms, "eo")
    url = control_plane.api_url(plan) + "/api/v1/vms"
    h = {"Authorization": f"Bearer {control_plane.TOKEN_FILE.read_text().strip()}"}
    assert kill_matching(plan.controller.netns, b"etcd") == 1
    t0 = time.monotonic()
    deadline = t0 + 30
    while (r := httpx.get(url, headers=h, timeout=20)).status_code != 503:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    assert "etcd at http://198.18.1.2:2379 is unreachable" in r.json()["detail"]
    running = {host.name: virsh_names(host.name) for host in plan.hosts}
    # etcd stays down for 10 s (the fault's length, not a wait for a condition)
    time.sleep(max(0.0, 10 - (time.monotonic() - t0)))
    assert {host.name: virsh_names(host.name) for host in plan.hosts} == running
    services.start_etcd(plan)
    control_plane.wait_hosts(plan, control_plane.TOKEN_FILE.read_text().strip())
    assert httpx.get(url, headers=h, timeout=10).status_code == 200
    assert_untouched(before)


def test_a_dead_hosts_ha_off_vm_shows_its_fate_until_the_host_is_back(
    plan: LabPlan, vms: VMs
) -> None:
    """HA off: nobody runs it elsewhere. While its host is down it is ``unknown`` (the host
    may still run it), then ``stopped`` once the host is fenced; back, it runs there again."""
    vms.create("dh1", "--host", "h3", "--ha", "off")
    ref = last_heartbeat("dh1")
    kumo("lab", "fault", "kill-host", "h3")
    try:
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + 30  # the lease's TTL is 5 s, the grace 2 s
        while (vm := vm_json("dh1")[0])["state"] != "stopped":
            assert time.monotonic() < deadline, (vm, seen)
            if vm["state"] != "running":
                seen.append((str(vm["state"]), str(vm["message"])))
            time.sleep(0.3)
        assert vm["host"] == "h3" and "host h3 is fenced" in str(vm["message"]), vm
        for state, message in seen:  # the window before the fence, when it was sampled
            assert state == "unknown" and "host h3 is down" in message, seen
    finally:
        kumo("lab", "fault", "heal", "h3")
    # back on its feet and unfenced, h3's agent starts the VM again: a new boot
    deadline = time.monotonic() + 120
    while vm_json("dh1")[0]["state"] != "running":
        assert time.monotonic() < deadline, vm_json("dh1")
        time.sleep(1)
    assert heartbeat_after("dh1", ref) != ref[0]
