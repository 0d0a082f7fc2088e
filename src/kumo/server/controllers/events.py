"""The event controller: keep the event log bounded, oldest events first, in transactions
that etcd accepts."""

from __future__ import annotations

from kumo.server.controllers.base import PassFence
from kumo.server.state import ClusterState
from kumo.store import keys
from kumo.store.base import Delete

MAX_EVENTS = 20000
TRIM_BATCH = 100  # deletes a transaction: under etcd's default limit of 128 operations


class EventTrimmer:
    """Trims on its first pass and then on every ``every``-th one: counting the whole log
    is a full read of it, which the log's growth between passes does not need."""

    name = "events"

    def __init__(
        self, state: ClusterState, fence: PassFence, max_events: int = MAX_EVENTS, every: int = 60
    ) -> None:
        self.state = state
        self.fence = fence
        self.max_events = max_events
        self.every = every
        self.passes = 0  # passes that reached this one (a fenced trim does not count)

    def reconcile(self, now: float) -> float | None:
        if self.passes % self.every == 0:
            self._trim()
        self.passes += 1
        return None

    def _trim(self) -> None:
        """Delete the oldest events beyond ``max_events`` (event keys sort by time)."""
        fence, store = self.fence(), self.state.store
        events = self.state.view.range(keys.EVENTS)
        extra = len(events) - self.max_events
        for i in range(0, extra, TRIM_BATCH):
            old = events[i : min(extra, i + TRIM_BATCH)]
            if store.commit(fence.compares, [Delete(e.key) for e in old]) is None:
                fence.check(store)
