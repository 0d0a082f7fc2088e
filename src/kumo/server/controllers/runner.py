"""``Controllers``: the leader's reconcilers, run in a fixed order, one pass a call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kumo.server.controllers.base import Reconciler
from kumo.server.controllers.events import MAX_EVENTS, EventTrimmer
from kumo.server.controllers.ha import HighAvailability
from kumo.server.controllers.maintenance import DrainHosts
from kumo.server.controllers.migration_queue import MigrationQueue
from kumo.server.controllers.netpaths import NetworkPaths
from kumo.server.controllers.scheduler import PlaceUnplaced
from kumo.server.service import ClusterService
from kumo.store.lease import NO_FENCE, Fence


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
        self._fence = NO_FENCE
        self.clock = service.clock
        # The order is fixed: HA first (a dead host's VMs get the room before anything new),
        # then network paths (a host cut off is unschedulable before anything is placed),
        # then place (a drain may need room the scheduler just counted), then ask drains to
        # migrate, then start what the queue allows, then trim.
        self.reconcilers: Sequence[Reconciler] = (
            HighAvailability(service.ha, self._pass_fence),
            NetworkPaths(service.netpaths, self._pass_fence),
            PlaceUnplaced(service.placement, self._pass_fence),
            DrainHosts(service.maintenance, self._pass_fence),
            MigrationQueue(service.migrations, self._pass_fence),
            EventTrimmer(service.state, self._pass_fence, max_events, trim_every),
        )
        self.due: dict[str, float] = {}  # reconciler -> when it asked to run again
        self.passes = 0

    def _pass_fence(self) -> Fence:
        return self._fence

    def run_once(self) -> None:
        """One pass: each reconciler in order, but for those whose requeue time is not yet
        due. :class:`Fenced` (this replica no longer leads) ends the pass."""
        self._fence = self.fence()
        now = self.clock.monotonic()  # requeue times: intervals on this process
        for r in self.reconcilers:
            if self.due.get(r.name, now) > now:
                continue
            after = r.reconcile(now)
            if after is None:
                self.due.pop(r.name, None)
            else:
                self.due[r.name] = now + after
        self.passes += 1
