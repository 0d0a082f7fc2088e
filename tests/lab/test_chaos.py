"""The lab's cluster-wide faults (router, NAS, etcd, the leading server) and a CI-sized chaos
run (#11): 10 faults from the lab's catalogue, seed 1, on a 3-host lab
with 6 HA VMs; every host's running domains sampled every 200 ms and every guest's serial
console every 250 ms. Nothing runs twice, nothing is lost, no task is stuck, every HA VM runs
again within 60 s of the last heal, and the lab is left healed without the run's VMs.
About 5 minutes (`bench/chaos.py` runs 100 faults)."""

from __future__ import annotations

import json

from kumo.chaos import KINDS
from kumo.lab import chaos as chaos_mod
from kumo.lab import control_plane
from kumo.lab import lab as lab_mod
from kumo.lab.plan import LabPlan
from tests.lab.conftest import kumo


def reach(src: str, dst: str) -> bool:
    ping = ["ping", "-c", "1", "-W", "1", dst]
    return kumo("lab", "exec", src, "--", *ping, check=False).returncode == 0


def node(name: str) -> dict[str, str]:
    status = json.loads(kumo("lab", "status", "--json").stdout)
    return dict(next(n for n in status["nodes"] if n["name"] == name))


def test_router_nas_etcd_and_leader_faults_show_and_heal(plan: LabPlan) -> None:
    kumo("lab", "fault", "router-down")
    assert not reach("h1", "198.18.0.1") and reach("h1", "198.18.1.10")
    assert "not answering (router-down)" in node("router")["detail"]
    kumo("lab", "fault", "heal", "router")
    assert reach("h1", "198.18.0.1")
    assert "faults" not in node("router")["detail"]

    kumo("lab", "fault", "nas-down")
    assert not reach("h2", "198.18.1.10") and reach("h2", "198.18.0.1")
    assert "not answering (nas-down)" in node("nas1")["detail"]
    kumo("lab", "fault", "nas-up")
    assert reach("h2", "198.18.1.10")

    kumo("lab", "fault", "kill-etcd")
    assert "etcd not running (kill-etcd)" in node("ctl")["detail"]
    kumo("lab", "fault", "heal", "ctl")
    assert node("ctl")["state"] == "running"

    kumo("lab", "fault", "kill-leader")  # the lab's one replica: no API until healed
    assert not control_plane.server_ok(plan)
    assert "kumo server replica 1 killed (kill-leader)" in node("ctl")["detail"]
    kumo("lab", "fault", "heal", "ctl")
    assert control_plane.server_ok(plan) and "faults" not in node("ctl")["detail"]
    control_plane.wait_hosts(plan, control_plane.TOKEN_FILE.read_text().strip())

    bad = kumo("lab", "fault", "heal", "switch", check=False)
    assert bad.returncode != 0
    assert "no such node 'switch' in the lab (nodes: h1, h2, h3, nas1, router, ctl)" in " ".join(
        bad.stderr.split()
    )


CI = chaos_mod.Options(
    faults=10, seed=1, vms=6, min_gap=3, max_gap=10, min_hold=5, max_hold=15, settle=8
)


def test_ten_random_faults_lose_nothing_and_run_nothing_twice(plan: LabPlan) -> None:
    report = chaos_mod.run(CI)
    data = report.to_json()
    assert len(data["faults"]) == 10 and {f["fault"].split()[0] for f in data["faults"]} <= {
        *KINDS,
        "cut",
        "slow",
    }
    assert [f for f in data["faults"] if f["error"]] == []
    assert all(n > 100 for n in report.samples.values()), report.samples  # the checker looked
    assert report.double_runs == (), [d.describe() for d in report.double_runs]
    assert report.vms_not_running == {}
    assert report.tasks_not_ended == ()
    assert report.settled_s is not None and report.settled_s <= 60, data["settled_s"]
    assert report.ok
    # the lab is left as it was: every node healed, no chaos VM, one server replica
    assert "faults:" not in kumo("lab", "status").stdout
    vms = json.loads(kumo("vm", "list", "-o", "json").stdout)
    assert [v["name"] for v in vms if v["name"].startswith(chaos_mod.VM_PREFIX)] == []
    assert set(control_plane.server_replicas(lab_mod.current_plan())) == {1}
