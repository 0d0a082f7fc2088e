"""The migration-queue controller: start queued migrations, oldest first, as the
concurrency limits allow."""

from __future__ import annotations

import logging

from kumo.server.controllers.base import PassFence
from kumo.server.migrations import Migrations

log = logging.getLogger("kumo.controllers")


class MigrationQueue:
    name = "migrations"
    actor = "controller:migrations"

    def __init__(self, migrations: Migrations, fence: PassFence) -> None:
        self.migrations = migrations
        self.fence = fence

    def reconcile(self, now: float) -> float | None:
        started = self.migrations.start_queued(self.actor, self.fence())
        if started:
            log.info("migrations started from the queue: %s", ", ".join(started))
        return None
