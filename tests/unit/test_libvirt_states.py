"""libvirt's (state, reason) pairs as kumo reads them: a QEMU that died is a crash."""

from __future__ import annotations

import libvirt
import pytest

from kumo.hypervisor.base import DomainState
from kumo.hypervisor.libvirt_hv import _state


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, DomainState.CRASHED),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, DomainState.SHUTOFF),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, DomainState.SHUTOFF),
        (libvirt.VIR_DOMAIN_CRASHED, 0, DomainState.CRASHED),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, DomainState.RUNNING),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, DomainState.PAUSED),
    ],
)
def test_state_and_reason(state: int, reason: int, expected: DomainState) -> None:
    assert _state(state, reason) == expected
