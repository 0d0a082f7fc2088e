"""The fake hypervisor's parts the simulator drives: hosts find each other only through the
fabric they were given, and the injected failures (a start, a migration, a power cut)."""

from __future__ import annotations

import pytest

from kumo.hypervisor.base import Directive, DomainState, HypervisorError, MigrationTarget
from kumo.hypervisor.domain import DomainConfig
from kumo.hypervisor.fake import FakeFabric, FakeHypervisor
from kumo.model.migration import Strategy

CONFIG = DomainConfig(
    "web1", "00000000-0000-0000-0000-000000000001", "qemu", 1, 64, disks=(), nics=()
)


def _running(hv: FakeHypervisor) -> None:
    hv.define(CONFIG)
    hv.start("web1")


def _migrate(hv: FakeHypervisor, to: str) -> None:
    target = MigrationTarget(host=to, libvirt_uri=f"fake+tcp://{to}/system", migrate_uri="")
    hv.migrate("web1", target, Strategy(name="pre-copy", reason="test"), lambda p: Directive())


def test_hosts_of_one_fabric_migrate_to_each_other_and_no_other_fabric_sees_them() -> None:
    fabric, other = FakeFabric(), FakeFabric()
    h1, h2 = FakeHypervisor("h1", fabric=fabric), FakeHypervisor("h2", fabric=fabric)
    FakeHypervisor("h3", fabric=other)
    _running(h1)
    with pytest.raises(HypervisorError, match="unable to connect"):
        _migrate(h1, "h3")  # another world's host of that name is not reachable
    _migrate(h1, "h2")
    assert [d.name for d in h2.domains()] == ["web1"] and h1.domains() == []
    fabric.connected = lambda source, target: False  # the storage link is down
    with pytest.raises(HypervisorError, match="unable to connect"):
        _migrate(h2, "h1")
    assert FakeHypervisor("lone").fabric is None


def test_injected_start_and_migration_failures_happen_as_often_as_asked() -> None:
    fabric = FakeFabric()
    h1, _ = FakeHypervisor("h1", fabric=fabric), FakeHypervisor("h2", fabric=fabric)
    h1.define(CONFIG)
    h1.start_failures["web1"] = 2
    for _ in range(2):
        with pytest.raises(HypervisorError, match="QEMU exited"):
            h1.start("web1")
    h1.start("web1")
    h1.migration_failures.add("web1")
    with pytest.raises(HypervisorError, match="injected"):
        _migrate(h1, "h2")
    _migrate(h1, "h2")


def test_a_power_cut_stops_every_guest_and_keeps_the_definitions() -> None:
    hv = FakeHypervisor("h1")
    _running(hv)
    hv.power_off()
    with pytest.raises(HypervisorError, match="unreachable"):
        hv.domains()
    hv.power_on()
    assert [d.state for d in hv.domains()] == [DomainState.SHUTOFF]
