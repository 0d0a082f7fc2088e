"""What a reconciler is, and how it gets the leader's fence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kumo.store.lease import Fence

# The fence of the pass under way (read by the runner once, at the start of each pass).
PassFence = Callable[[], Fence]


class Reconciler(Protocol):
    name: str

    def reconcile(self, now: float) -> float | None:
        """One level-triggered pass at ``now`` (the process's monotonic clock: for intervals and
        deadlines, never stored): bring the cluster towards what it should be.
        Returns the seconds until it wants to run again, or None for the next pass."""
        ...
