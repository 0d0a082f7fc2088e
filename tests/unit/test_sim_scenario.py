"""The scenario runner (kumo.sim.scenario, kumo.sim.runner, `kumo sim run`): bad files are
refused naming the file, entry, field and what is allowed; a failed expectation or invariant
is named with its virtual time; the CLI prints PASS/FAIL and exits 1 on a failure."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kumo import faults as f
from kumo.cli.main import app
from kumo.model.activity import Task, TaskState
from kumo.model.vm import Placement
from kumo.sim.cluster import vm_spec
from kumo.sim.invariants import hard_rules, tasks_unended
from kumo.sim.runner import Runner, run
from kumo.sim.scenario import RunningOn, ScenarioError, StaysOn, load, loads
from kumo.store import keys
from kumo.store.records import put

BASE = "hosts: [h1, h2, {name: h3, vcpus: 4, memory_mib: 4096}]\nuntil: 20\n"


def test_a_scenario_loads_into_typed_models() -> None:
    s = loads(
        BASE
        + "vms:\n  - {name: vm1, host: h1, hosts: [h1, h2], preferred: h2}\n"
        + "events:\n  - {at: 5, do: power-off h1}\n"
        + "expect:\n  - {at: 10, vm: vm1, running_on: [h2]}\n"
        + "  - {from: 0, to: 5, vm: vm1, stays_on: h1}\n"
    )
    assert [h.memory_mib for h in s.hosts] == [8192, 8192, 4096]
    vm = s.vms[0]
    assert (vm.vcpus, vm.memory_mib, vm.state, vm.ha, vm.priority) == (
        1,
        512,
        "running",
        "restart",
        0,
    )
    assert s.events[0].do == f.PowerOff("h1") and s.events[0].line == 6
    first, second = s.expect
    assert isinstance(first.check, RunningOn) and first.line == 8
    assert isinstance(second.check, StaysOn) and second.check.start == 0
    assert str(first) == "expect[0] (line 8) {at: 10, vm: vm1, running_on: [h2]}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "vms:\n  - {name: a, host: h9}",
            r"x.yaml: vms\[0\] \(line 4\): field `host`: no host named h9 \(known: h1, h2, h3\)",
        ),
        (
            "vms:\n  - {name: a, colour: red}",
            r"vms\[0\] \(line 4\): field `colour`: unknown field \(allowed fields: name, host,",
        ),
        (
            "vms:\n  - {name: a, priority: 2000}",
            r"field `priority`: Input should be less than or equal to 1000",
        ),
        (
            "events:\n  - {at: 1, do: explode h1}",
            r"events\[0\] \(line 5\): field `do`: do: 'explode h1' is not a fault; "
            r"allowed: power-off HOST",
        ),
        (
            "events:\n  - {at: 30, do: power-off h1}",
            r"events\[0\] \(line 5\): field `at`: 30 is after until \(20\)",
        ),
        (
            "expect:\n  - {at: 1, vm: a}",
            r"expect\[0\] \(line 5\): one of running_on, .* state is needed",
        ),
        (
            "expect:\n  - {at: 1, host: h1, state: broken}",
            r"field `state`: Input should be 'up', 'down', 'fenced'",
        ),
        (
            "expect:\n  - {from: 5, to: 1, vm: a, max_moves: 1}",
            r"field `from`: 5 is after `to` \(1\)",
        ),
        ("expect:\n  - {at: 1, vms: [a, zz], apart: true}", r"field `vms`: no vm named zz"),
        ("colour: red", r"x.yaml: colour: unknown section; allowed: description, hosts"),
    ],
)
def test_a_bad_file_is_refused_naming_the_entry_and_the_field(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        loads(BASE + "vms: [{name: a}]\n" * (not text.startswith("vms:")) + text, "x.yaml")


def test_until_is_needed() -> None:
    with pytest.raises(ScenarioError, match="until: None: a positive number"):
        loads("hosts: [h1]\n", "x.yaml")


def test_a_failed_expectation_names_itself_and_its_time() -> None:
    s = loads(
        BASE
        + "vms:\n  - {name: vm1, host: h1}\n"
        + "events:\n  - {at: 5, do: vm migrate vm1 h2}\n"
        + "expect:\n  - {from: 0, to: 20, vm: vm1, stays_on: h1}\n"
        + "  - {at: 20, vm: vm1, running_on: [h2]}\n"
        + "  - {from: 0, to: 20, vm: vm1, max_moves: 0}\n",
        "m.yaml",
    )
    result = run(s)
    assert [str(x) for x in result.failures] == [
        "expect[0] (line 8) {from: 0, to: 20, vm: vm1, stays_on: h1} failed at t=5.500: "
        "vm vm1 runs on h2, not on h1",
        "expect[2] (line 10) {from: 0, to: 20, vm: vm1, max_moves: 0} failed at t=5.500: "
        "vm vm1 changed host 1 times (at most 0)",
    ]
    assert "t=5.000 fault: vm migrate vm1 h2" in result.log


def test_a_restart_within_one_tick_is_counted() -> None:
    s = loads(
        BASE
        + "vms:\n  - {name: vm1, host: h1}\n"
        + "events:\n  - {at: 5, do: vm-crash vm1}\n"
        + "expect:\n  - {from: 0, to: 20, vm: vm1, max_restarts: 0}\n"
        + "  - {from: 0, to: 20, vm: vm1, stays_on: h1}\n"
    )
    failures = [str(x) for x in run(s).failures]
    assert len(failures) == 2
    assert failures[0].endswith("failed at t=5.500: vm vm1 booted 1 times (at most 0)")
    assert failures[1].endswith("failed at t=5.500: vm vm1 booted again at t=5.500")


def test_a_command_the_cluster_refuses_fails_the_scenario() -> None:
    s = loads(
        BASE + "vms:\n  - {name: vm1, host: h1}\nevents:\n  - {at: 2, do: vm migrate vm1 h1}\n"
    )
    [failure] = run(s).failures
    assert str(failure).startswith("events[0] (line 6) failed at t=2.000: Conflict: ")
    assert "already runs on h1" in str(failure)


def test_a_vm_that_does_not_fit_fails_the_setup() -> None:
    s = loads(BASE + "vms:\n  - {name: big, host: h3, memory_mib: 8192}\n", "big.yaml")
    [failure] = run(s).failures
    assert failure.what == "setup" and "big.yaml: setup: vms[0] big:" in failure.detail


def _runner() -> Runner:
    r = Runner(
        loads(
            BASE
            + "vms:\n  - {name: vm1, host: h1}\n"
            + "  - {name: db1, host: h1, anti_affinity: db}\n"
            + "  - {name: db2, host: h2, anti_affinity: db}\n"
        )
    )
    r.setup()
    r.look(0.0)
    return r


def test_a_start_on_a_new_host_while_the_old_one_may_run_it_is_caught() -> None:
    """h1 loses power (its VM dies, but nobody knows: not fenced, no report); a placement
    moved by hand makes h2 start the VM at once: the invariant ``new-host-start``."""
    r = _runner()
    w = r.world
    w.apply(f.PowerOff("h1"))
    w.store.commit([], [put(keys.PLACEMENT + "vm1", Placement(host="h2", at=w.clock.now()))])
    for k in range(1, 4):
        w.step(0.5)
        r.look(k * 0.5)
    assert w.running_on("vm1") == ["h2"]
    [v] = [x for x in r.failures if x.what == "invariant new-host-start"]
    assert (
        v.t == 0.5
        and "vm vm1 started on h2 while h1, where it ran last, might still run it" in v.detail
    )


def test_a_stop_reported_by_the_old_host_lets_the_vm_start_on_a_new_one() -> None:
    r = _runner()
    w = r.world
    w.apply(f.VmPower("vm1", "stop"))
    for k in range(1, 5):
        w.step(0.5)
        r.look(k * 0.5)
    w.store.commit([], [put(keys.PLACEMENT + "vm1", Placement(host="h2", at=w.clock.now()))])
    w.apply(f.VmPower("vm1", "start"))
    for k in range(5, 10):
        w.step(0.5)
        r.look(k * 0.5)
    assert w.running_on("vm1") == ["h2"] and r.failures == []


def test_a_placement_that_breaks_anti_affinity_is_caught() -> None:
    r = _runner()
    w = r.world
    w.store.commit([], [put(keys.PLACEMENT + "db2", Placement(host="h1", at=w.clock.now()))])
    w.step(0.5)
    r.look(0.5)
    [v] = [x for x in r.failures if x.what == "invariant hard-rules"]
    assert v.detail == "vm db2 placed on h1 with another of anti-affinity group db"


def test_hard_rules_cover_hosts_affinity_and_memory() -> None:
    specs = {
        "a": vm_spec("a", memory_mib=3000, ha={"hosts": ["h1"]}),
        "b": vm_spec("b", memory_mib=3000, placement={"affinity": "g"}),
        "c": vm_spec("c", placement={"affinity": "g"}),
    }
    found = hard_rules(
        3.0, {"a": "h2", "b": "h2", "c": "h1"}, specs, {"h1": 8192, "h2": 4096}, ["a", "b"]
    )
    assert [str(v) for v in found] == [
        "invariant hard-rules broken at t=3.000: vm a placed on h2, not one of its hosts h1",
        "invariant hard-rules broken at t=3.000: host h2 holds 6000 MiB of VMs, has 4096 MiB",
        "invariant hard-rules broken at t=3.000: vm b placed on h2 apart from c (affinity g)",
        "invariant hard-rules broken at t=3.000: host h2 holds 6000 MiB of VMs, has 4096 MiB",
    ]
    assert hard_rules(3.0, {"b": "h1", "c": "h1"}, specs, {"h1": 8192}, ["b", "c"]) == []


def test_a_task_left_running_without_a_reason_is_caught() -> None:
    def task(i: str, state: TaskState, message: str = "") -> Task:
        return Task(
            id=i,
            kind="vm.start",
            target="vm/a",
            state=state,
            message=message,
            actor="t",
            created_at=0,
            updated_at=0,
        )

    found = tasks_unended(
        9.0,
        [
            task("t1", TaskState.RUNNING),
            task("t2", TaskState.QUEUED, "waiting for a migration slot"),
            task("t3", TaskState.SUCCEEDED),
        ],
    )
    assert [str(v) for v in found] == [
        "invariant task-ends broken at t=9.000: task t1 (vm.start vm/a) is still running "
        "with no reason in its record"
    ]


def test_the_cli_prints_pass_and_fail_and_exits_1(tmp_path: Path) -> None:
    good, bad, broken = tmp_path / "good.yaml", tmp_path / "bad.yaml", tmp_path / "broken.yaml"
    good.write_text(
        BASE + "vms: [{name: a, host: h1}]\nexpect:\n  - {at: 5, vm: a, running_on: [h1]}\n"
    )
    bad.write_text(
        BASE + "vms: [{name: a, host: h1}]\nexpect:\n  - {at: 5, vm: a, running_on: [h2]}\n"
    )
    broken.write_text("hosts: []\nuntil: 3\n")
    cli = CliRunner()
    ok = cli.invoke(app, ["sim", "run", str(good), "--log"])
    assert ok.exit_code == 0 and ok.output.endswith(f"PASS {good}\n")
    assert f"# {good}:" in ok.output
    out = cli.invoke(app, ["sim", "run", str(good), str(bad), str(broken), "--seed", "3"])
    assert out.exit_code == 1
    lines = out.output.splitlines()
    assert lines[0] == f"PASS {good}"
    assert lines[1] == (
        f"FAIL {bad}: expect[0] (line 5) {{at: 5, vm: a, running_on: [h2]}} failed at "
        "t=5.000: vm a runs on h1, not on one of h2"
    )
    assert lines[2] == f"FAIL {broken}: {broken}: hosts: at least one host is needed"


def test_a_missing_file_is_named() -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: cannot read"):
        load("nope.yaml")
