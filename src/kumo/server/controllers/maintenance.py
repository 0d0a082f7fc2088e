"""The maintenance controller: move the running VMs off draining hosts, and declare a host
in maintenance once it is empty."""

from __future__ import annotations

from kumo.server.controllers.base import PassFence
from kumo.server.maintenance import Maintainer


class DrainHosts:
    name = "maintenance"
    actor = "controller:maintenance"

    def __init__(self, maintainer: Maintainer, fence: PassFence) -> None:
        self.maintainer = maintainer
        self.fence = fence

    def reconcile(self, now: float) -> float | None:
        self.maintainer.drain(self.actor, self.fence())
        return None
