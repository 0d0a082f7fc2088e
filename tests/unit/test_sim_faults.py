"""The fault vocabulary: every `do:` string of the scenario format parses to its typed fault
and back; bad ones are refused naming what is allowed; `kumo lab fault`'s syntax maps onto
the same faults with the lab's messages (tests/lab/test_lab.py checks them end to end)."""

from __future__ import annotations

import pytest

from kumo import faults as f
from kumo.lab import lab
from kumo.lab.plan import LabPlanError

SCENARIO_DO = {  # the examples of /work/shared/SCENARIOS.md
    "power-off h1": f.PowerOff("h1"),
    "power-on h1": f.PowerOn("h1"),
    "reboot h1": f.Reboot("h1"),
    "link h2 public down": f.Link("h2", "public", up=False),
    "link h2 storage up": f.Link("h2", "storage", up=True),
    "partition h3": f.Partition("h3"),
    "heal h3": f.Heal("h3"),
    "router down": f.Router(up=False),
    "nas up": f.Nas(up=True),
    "kill-agent h2": f.KillAgent("h2"),
    "restart-agent h2": f.RestartAgent("h2"),
    "kill-libvirtd h2": f.KillLibvirtd("h2"),
    "restart-libvirtd h2": f.RestartLibvirtd("h2"),
    "vm-crash vm3": f.VmCrash("vm3"),
    "start-fails vm3 h3 2": f.StartFails("vm3", "h3", 2),
    "migrate-fails vm3": f.MigrateFails("vm3"),
    "maintenance enter h3": f.Maintenance("h3", enter=True),
    "maintenance exit h3": f.Maintenance("h3", enter=False),
    "vm migrate vm3 h2": f.VmMigrate("vm3", "h2"),
    "vm stop vm3": f.VmPower("vm3", "stop"),
    "vm ha vm3 off": f.VmHa("vm3", "off"),
    "leader-crash": f.LeaderCrash(),
    "store down": f.StoreDown(),
    "store up": f.StoreUp(),
    "fence h1": f.Fence("h1"),
    "pause-agent h2": f.PauseAgent("h2"),
    "resume-agent h2": f.ResumeAgent("h2"),
    "slow h3 storage 80": f.Slow("h3", "storage", 80.0),
}


@pytest.mark.parametrize(("text", "fault"), SCENARIO_DO.items())
def test_every_do_string_parses_and_describes_back(text: str, fault: f.Fault) -> None:
    assert f.parse_fault(text) == fault
    assert f.parse_fault(f.describe(fault)) == fault


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("power-of h1", "not a fault; allowed: power-off HOST; power-on HOST"),
        ("", "not a fault"),
        ("power-off", "expected `power-off HOST`"),
        ("link h1 wifi down", "network: 'wifi' is not a lab network; use public or storage"),
        ("link h1 public sideways", "'sideways' is not up or down"),
        ("start-fails vm3 h3 0", "count: '0' is not a positive whole number"),
        ("slow h3 storage fast", "rate: 'fast' is not a positive number of Mbit/s"),
        ("vm reboot vm3", "'reboot': use start or stop or delete"),
        ("vm migrate vm3", "expected `vm migrate VM HOST` or `vm start|stop|delete VM`"),
        ("store sideways", "'sideways' is not up or down"),
    ],
)
def test_bad_do_strings_say_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(f.FaultError, match="do: .*" + message.replace("|", "\\|")):
        f.parse_fault(text)


@pytest.mark.parametrize(
    ("kind", "args", "fault"),
    [
        ("kill-host", ["h1"], f.PowerOff("h1")),
        ("kill-libvirtd", ["h1"], f.KillLibvirtd("h1")),
        ("kill-agent", ["h1"], f.KillAgent("h1")),
        ("cut", ["h1", "storage"], f.Link("h1", "storage", up=False)),
        ("partition", ["h1"], f.Partition("h1")),
        ("slow", ["h1", "public", "80mbit"], f.Slow("h1", "public", 80.0)),
        ("slow", ["h1", "public", "10MBps"], f.Slow("h1", "public", 80.0)),
        ("slow", ["h1", "public", "500kbit"], f.Slow("h1", "public", 0.5)),
        ("heal", ["h1"], f.Heal("h1")),
    ],
)
def test_the_lab_syntax_maps_onto_the_vocabulary(
    kind: str, args: list[str], fault: f.Fault
) -> None:
    assert f.from_lab(kind, args) == fault


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [  # the messages tests/lab/test_lab.py expects from `kumo lab fault`
        ("cut", ["h1", "wifi"], "network: 'wifi' is not a lab network"),
        ("explode", ["h1"], "unknown fault 'explode'"),
        ("slow", ["h1", "storage", "fast"], "rate: 'fast' is not a rate"),
        ("partition", [], "expected `partition HOST`"),
    ],
)
def test_lab_fault_refuses_bad_arguments_before_touching_the_lab(
    kind: str, args: list[str], message: str
) -> None:
    with pytest.raises(LabPlanError, match=message):
        lab.fault(kind, args)  # parsing fails first: no lab plan is read
