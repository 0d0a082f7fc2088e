"""A CI-sized chaos run (#11): 10 faults from the lab's catalogue, seed 1, on a 3-host lab
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
