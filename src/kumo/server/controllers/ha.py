"""The HA controller: fence hosts whose lease is gone, recover their HA VMs, unfence hosts
that came back, answer HA VMs' failed starts, move failback VMs home (kumo.server.ha)."""

from __future__ import annotations

from kumo.server.controllers.base import PassFence
from kumo.server.ha import HAManager


class HighAvailability:
    name = "ha"

    def __init__(self, manager: HAManager, fence: PassFence) -> None:
        self.manager = manager
        self.fence = fence

    def reconcile(self, now: float) -> float | None:
        self.manager.run(now, self.fence())
        return None  # every pass: a lease can vanish at any moment
