"""The Hypervisor contract, run against the fake and against the real libvirt
implementation on libvirt's test:///default driver."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from kumo.hypervisor.base import DomainState, Hypervisor, HypervisorError, PauseReason
from kumo.hypervisor.domain import DiskConfig, DomainConfig, NicConfig
from kumo.hypervisor.fake import FakeHypervisor
from kumo.hypervisor.libvirt_hv import LibvirtHypervisor

_n = itertools.count()


@pytest.fixture(params=["fake", "libvirt-test"])
def hv(request: pytest.FixtureRequest) -> Iterator[Hypervisor]:
    h: Hypervisor = (
        FakeHypervisor("h1")
        if request.param == "fake"
        else LibvirtHypervisor("test:///default", host="test")
    )
    yield h
    for d in h.domains():
        if d.kumo_vm:
            h.destroy(d.name)
            if any(x.name == d.name for x in h.domains()):
                h.undefine(d.name)
    h.close()


def config(name: str | None = None) -> DomainConfig:
    i = next(_n)
    name = name or f"c{i}"
    return DomainConfig(
        name=name,
        uuid=f"00000000-0000-4000-8000-{i:012d}",
        domain_type="qemu",
        vcpus=1,
        memory_mib=128,
        disks=(DiskConfig(f"/pool/{name}.qcow2"),),
        nics=(NicConfig("br0", f"52:54:00:00:00:{i % 256:02x}"),),
    )


def state(hv: Hypervisor, name: str) -> DomainState | None:
    return next((d.state for d in hv.domains() if d.name == name), None)


def test_facts(hv: Hypervisor) -> None:
    f = hv.facts()
    assert f.cpus >= 1 and f.memory_mib >= 1 and f.libvirt_version.count(".") == 2


def test_define_marks_domain_as_kumo_and_is_idempotent(hv: Hypervisor) -> None:
    cfg = config()
    hv.define(cfg)
    hv.define(cfg)  # redefining the same domain is fine
    ours = [d for d in hv.domains() if d.name == cfg.name]
    assert len(ours) == 1 and ours[0].kumo_vm == cfg.name and ours[0].uuid == cfg.uuid
    assert ours[0].state == DomainState.SHUTOFF


def test_lifecycle(hv: Hypervisor) -> None:
    cfg = config()
    hv.define(cfg)
    hv.start(cfg.name)
    assert state(hv, cfg.name) == DomainState.RUNNING
    with pytest.raises(HypervisorError, match=cfg.name):
        hv.start(cfg.name)  # already running
    hv.reboot(cfg.name)
    hv.reset(cfg.name)
    assert state(hv, cfg.name) == DomainState.RUNNING
    hv.destroy(cfg.name)
    assert state(hv, cfg.name) == DomainState.SHUTOFF
    hv.destroy(cfg.name)  # no-op when off
    hv.start(cfg.name)
    hv.shutdown(cfg.name)  # these guests obey ACPI
    assert state(hv, cfg.name) == DomainState.SHUTOFF
    hv.undefine(cfg.name)
    assert state(hv, cfg.name) is None


def test_unknown_domain_is_named(hv: Hypervisor) -> None:
    with pytest.raises(HypervisorError, match="nosuch"):
        hv.start("nosuch")


def test_change_callback(hv: Hypervisor) -> None:
    seen: list[str] = []
    got = threading.Event()

    def cb(name: str) -> None:
        seen.append(name)
        got.set()

    hv.on_change(cb)
    cfg = config()
    hv.define(cfg)
    hv.start(cfg.name)
    assert got.wait(5) and cfg.name in seen


def pause_by_user(hv: Hypervisor, name: str) -> None:
    """What an operator's ``virsh suspend`` does (not part of the interface: kumo never
    pauses a guest itself)."""
    if isinstance(hv, FakeHypervisor):
        hv.pause(name)
    else:
        assert isinstance(hv, LibvirtHypervisor)
        hv._conn.lookupByName(name).suspend()


def paused_reason(hv: Hypervisor, name: str) -> PauseReason | None:
    return next(d.paused_reason for d in hv.domains() if d.name == name)


def test_a_paused_domain_says_why_and_resumes(hv: Hypervisor) -> None:
    cfg = config()
    hv.define(cfg)
    assert paused_reason(hv, cfg.name) is None  # off: not paused
    hv.start(cfg.name)
    assert paused_reason(hv, cfg.name) is None
    with pytest.raises(HypervisorError, match=cfg.name):
        hv.resume(cfg.name)  # not paused
    pause_by_user(hv, cfg.name)
    assert state(hv, cfg.name) == DomainState.PAUSED
    assert paused_reason(hv, cfg.name) == PauseReason.USER
    hv.resume(cfg.name)
    assert state(hv, cfg.name) == DomainState.RUNNING
    assert paused_reason(hv, cfg.name) is None
    with pytest.raises(HypervisorError, match="nosuch"):
        hv.resume("nosuch")


def test_the_fake_pauses_its_guests_on_io_errors_when_storage_is_lost() -> None:
    """As QEMU with error_policy='stop' (hypervisor/domain.py) at the guests' next disk
    access; nothing resumes them by itself when the storage returns. Resuming is the same
    boot (the guest never stopped)."""
    hv = FakeHypervisor("h1")
    running, off = config(), config()
    for cfg in (running, off):
        hv.define(cfg)
    hv.start(running.name)
    assert hv.storage_lost() == [running.name]
    assert state(hv, running.name) == DomainState.PAUSED
    assert paused_reason(hv, running.name) == PauseReason.IOERROR
    assert state(hv, off.name) == DomainState.SHUTOFF
    hv.resume(running.name)
    assert state(hv, running.name) == DomainState.RUNNING and hv.boots(running.name) == 1
