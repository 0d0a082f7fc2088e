"""Controllers the leader runs, each one level-triggered pass over the store:
- scheduler: place every VM that has no host (the API places at create; this catches the rest);
- maintenance: ask to move the running VMs off draining hosts;
- migration queue: start queued migrations as the concurrency limits allow;
- events: keep the event log bounded.

Every write of theirs carries the leader's fence (``LeaderElector.fence``): a deposed leader's
write is refused by the store, and :class:`Fenced` ends the pass (``run_elected`` steps down)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from kumo.server.service import ClusterService
from kumo.store import keys
from kumo.store.base import Delete
from kumo.store.lease import NO_FENCE, Fence

log = logging.getLogger("kumo.controllers")
MAX_EVENTS = 20000
TRIM_BATCH = 100  # deletes a transaction: under etcd's default limit of 128 operations


class Controllers:
    def __init__(
        self,
        service: ClusterService,
        trim_every: int = 60,
        max_events: int = MAX_EVENTS,
        fence: Callable[[], Fence] = lambda: NO_FENCE,
    ) -> None:
        self.service = service
        self.fence = fence  # the leader's token, read at the start of each pass
        self.trim_every = trim_every  # trim the event log on the first pass and every n-th
        self.max_events = max_events
        self.passes = 0

    def run_once(self) -> None:
        fence = self.fence()
        placed = self.service.place_unplaced("controller:scheduler", fence)
        if placed:
            log.info("placed %s", ", ".join(placed))
        self.service.migrations.drain("controller:maintenance", fence)
        started = self.service.migrations.start_queued("controller:migrations", fence)
        if started:
            log.info("migrations started from the queue: %s", ", ".join(started))
        if self.passes % self.trim_every == 0:
            self._trim_events(fence)
        self.passes += 1

    def _trim_events(self, fence: Fence) -> None:
        """Delete the oldest events beyond ``max_events`` (event keys sort by time)."""
        events = self.service.view.range(keys.EVENTS)
        extra = len(events) - self.max_events
        for i in range(0, extra, TRIM_BATCH):
            old = events[i : min(extra, i + TRIM_BATCH)]
            if self.service.store.commit(fence.compares, [Delete(e.key) for e in old]) is None:
                fence.check(self.service.store)
