"""High availability end to end in a 3-host lab (real etcd, libvirtd, QEMU, virtlockd): a host
dies or is cut off, its HA VMs run again elsewhere and their guests boot again, never on two
hosts at once; HA-off VMs stay down; the host rejoins with no stale domain running.

Each test samples every host's running domains every 200 ms for its whole length (libvirt,
from inside each host) and fails if a VM was ever seen running on two hosts at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from kumo.lab.namespaces import STATE_DIR
from kumo.lab.plan import LabPlan
from kumo.lab.sampler import DomainSampler
from tests.lab.conftest import VMs, heartbeat_after, kumo, last_heartbeat


@pytest.fixture
def sampler(plan: LabPlan) -> Iterator[DomainSampler]:
    s = DomainSampler(plan).start()
    try:
        yield s
    finally:
        s.stop()
    assert s.doubles() == []
    assert all(s.samples.values()), "a sampler saw nothing: the check above proved nothing"


def vm_row(name: str) -> dict[str, object]:
    rows: list[dict[str, object]] = json.loads(kumo("vm", "list", "-o", "json").stdout)
    return next(r for r in rows if r["name"] == name)


def events_of(obj: str) -> list[dict[str, object]]:
    out = kumo("events", "--object", obj, "--limit", "100", "-o", "json").stdout
    return list(json.loads(out))


def wait_for(what: str, cond: object, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.3)


def running_elsewhere(name: str, dead: str) -> bool:
    row = vm_row(name)
    return row["state"] == "running" and row["host"] != dead


def heal(host: str) -> None:
    kumo("lab", "fault", "heal", host, timeout=180)


def test_a_killed_hosts_ha_vm_boots_elsewhere_and_ha_off_stays_down(
    plan: LabPlan, vms: VMs, sampler: DomainSampler
) -> None:
    vms.create("kh1", "--host", "h1")
    vms.create("kh2", "--host", "h1", "--ha", "off")
    ref = last_heartbeat("kh1")
    kumo("lab", "fault", "kill-host", "h1")
    wait_for("kh1 running on another host", lambda: running_elsewhere("kh1", "h1"))
    assert heartbeat_after("kh1", ref) != ref[0]  # the guest booted again, elsewhere
    off = vm_row("kh2")
    assert off["host"] == "h1" and off["state"] == "stopped", off
    recovered = [e for e in events_of("vm/kh1") if e["action"] == "recovered"]
    assert recovered and "host h1 fenced" in str(recovered[0]["message"])
    heal("h1")
    wait_for("h1 unfenced", lambda: "h1" not in _fenced_now())
    wait_for("kh2 running on h1 again", lambda: vm_row("kh2")["state"] == "running")
    assert vm_row("kh1")["host"] != "h1"
    assert sampler.hosts_running("kh1") == {"h1", str(vm_row("kh1")["host"])}


def _fenced_now() -> list[str]:
    hosts: list[dict[str, object]] = json.loads(kumo("host", "list", "-o", "json").stdout)
    return [str(h["name"]) for h in hosts if h["state"] == "fenced"]


def test_a_host_cut_from_etcd_destroys_its_ha_vm_before_it_starts_elsewhere(
    plan: LabPlan, vms: VMs, sampler: DomainSampler
) -> None:
    vms.create("pt1", "--host", "h2")
    ref = last_heartbeat("pt1")
    kumo("lab", "fault", "partition", "h2")
    try:
        wait_for("pt1 running on another host", lambda: running_elsewhere("pt1", "h2"))
        assert heartbeat_after("pt1", ref) != ref[0]
    finally:
        heal("h2")
    wait_for("h2's self-fence reported", lambda: _self_fenced("h2"))
    fenced_at = _event_time("host/h2", "self-fenced")
    recovered_at = _event_time("vm/pt1", "recovered")
    assert fenced_at < recovered_at, (fenced_at, recovered_at)
    first_elsewhere = min(
        t for h, s in sampler.samples.items() if h != "h2" for t, names in s if "pt1" in names
    )
    last_on_h2 = max(t for t, names in sampler.samples["h2"] if "pt1" in names)
    assert last_on_h2 < first_elsewhere, (last_on_h2, first_elsewhere)
    wait_for("h2 rejoined", lambda: "h2" not in _fenced_now())
    assert "pt1" not in _running_on("h2")


def _self_fenced(host: str) -> bool:
    return any(e["action"] == "self-fenced" for e in events_of(f"host/{host}"))


def _event_time(obj: str, action: str) -> float:
    return float(next(e["time"] for e in events_of(obj) if e["action"] == action))  # type: ignore[arg-type]


def _running_on(host: str) -> set[str]:
    return set(kumo("lab", "exec", host, "--", "virsh", "list", "--name").stdout.split())


def test_a_killed_agent_is_fenced_by_the_watchdog_and_the_vm_moves(
    plan: LabPlan, vms: VMs, sampler: DomainSampler
) -> None:
    vms.create("wd1", "--host", "h3")
    ref = last_heartbeat("wd1")
    kumo("lab", "fault", "kill-agent", "h3")
    try:
        wait_for("wd1 running on another host", lambda: running_elsewhere("wd1", "h3"))
        assert heartbeat_after("wd1", ref) != ref[0]
        log = (STATE_DIR / "h3" / "watchdog.log").read_text()
        assert "killed HA guests wd1" in log, log
    finally:
        heal("h3")
    wait_for("h3 rejoined", lambda: "h3" not in _fenced_now())
    assert "wd1" not in _running_on("h3")


def test_when_room_is_short_priority_decides_and_the_rest_waits_recovering(
    plan: LabPlan, vms: VMs, sampler: DomainSampler
) -> None:
    """Two 10 GB HA VMs on h1 may run on h1 or h2 only; h2 has room for one (a 10 GB HA-off
    VM there; each lab host offers the machine's ~24 GB). h1 dies: the higher priority runs
    on h2, the other waits ``recovering`` with the scheduler's reason, and runs on h1 again
    once h1 is back. Guests touch little of their memory: the sizes are the scheduler's."""
    big = 10000
    vms.create("cap-fill", "--host", "h2", "--ha", "off", memory=big)
    vms.create("cap-low", "--host", "h1", "--hosts", "h1,h2", "--priority", "1", memory=big)
    vms.create("cap-high", "--host", "h1", "--hosts", "h1,h2", "--priority", "100", memory=big)
    kumo("lab", "fault", "kill-host", "h1")
    try:
        wait_for("cap-high running on h2", lambda: running_elsewhere("cap-high", "h1"))
        assert vm_row("cap-high")["host"] == "h2"
        wait_for("cap-low recovering", lambda: vm_row("cap-low")["state"] == "recovering")
        assert "not enough free memory" in str(vm_row("cap-low")["message"])
    finally:
        heal("h1")
    wait_for("cap-low running on h1 again", lambda: vm_row("cap-low")["state"] == "running")
    assert vm_row("cap-low")["host"] == "h1" and vm_row("cap-high")["host"] == "h2"
