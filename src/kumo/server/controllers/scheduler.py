"""The scheduler controller: place every VM that has no host yet."""

from __future__ import annotations

import logging

from kumo.server.controllers.base import PassFence
from kumo.server.placement import Placer

log = logging.getLogger("kumo.controllers")


class PlaceUnplaced:
    name = "scheduler"
    actor = "controller:scheduler"

    def __init__(self, placer: Placer, fence: PassFence) -> None:
        self.placer = placer
        self.fence = fence

    def reconcile(self, now: float) -> float | None:
        placed = self.placer.place_unplaced(self.actor, self.fence())
        if placed:
            log.info("placed %s", ", ".join(placed))
        return None
