"""The controllers the leader runs: one reconciler per concern, each a level-triggered pass
over the cluster's state that says when it wants to look again (``reconcile(now) ->
requeue_after``, as in controller-runtime):

- ``ha``: fence hosts whose lease is gone and recover their HA VMs (kumo.server.ha);
- ``netpaths``: mark hosts that alone lost a network path degraded, move VMs off those that
  lost the public one (kumo.server.netpaths);
- ``scheduler``: place every VM that has no host (the API places at create; this catches
  the rest);
- ``maintenance``: ask to move the running VMs off draining hosts;
- ``migration_queue``: start queued migrations as the concurrency limits allow;
- ``events``: keep the event log bounded.

Every write of theirs carries the leader's fence (``LeaderElector.fence``), read once at the
start of each pass: a deposed leader's write is refused by the store, and :class:`Fenced`
ends the pass (``run_elected`` steps down)."""

from __future__ import annotations

from kumo.server.controllers.base import Reconciler
from kumo.server.controllers.events import MAX_EVENTS, TRIM_BATCH, EventTrimmer
from kumo.server.controllers.maintenance import DrainHosts
from kumo.server.controllers.migration_queue import MigrationQueue
from kumo.server.controllers.runner import Controllers
from kumo.server.controllers.scheduler import PlaceUnplaced

__all__ = [
    "MAX_EVENTS",
    "TRIM_BATCH",
    "Controllers",
    "DrainHosts",
    "EventTrimmer",
    "MigrationQueue",
    "PlaceUnplaced",
    "Reconciler",
]
