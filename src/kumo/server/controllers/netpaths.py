"""The network-path controller: mark hosts that alone lost a network path ``degraded`` and
move the HA VMs off those that lost their public path (kumo.server.netpaths)."""

from __future__ import annotations

from kumo.server.controllers.base import PassFence
from kumo.server.netpaths import NetPaths


class NetworkPaths:
    name = "netpaths"

    def __init__(self, netpaths: NetPaths, fence: PassFence) -> None:
        self.netpaths = netpaths
        self.fence = fence

    def reconcile(self, now: float) -> float | None:
        self.netpaths.run(self.fence())
        return None  # every pass: the agents' reports change at any moment
