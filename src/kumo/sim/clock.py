"""The simulator's clock: virtual seconds that pass only when the world says so.

``VirtualClock`` is a :class:`kumo.clock.Clock`: the agents, leader electors, lease keepers,
services and the memory store of a simulated world all read it, so a lease expires, a
deadline passes or a timestamp is written at the same virtual instant on every run. It never
moves by itself; ``advance`` (called by ``World.step``) is the only way on.
"""

from __future__ import annotations


class VirtualClock:
    """Virtual time ``t`` (from ``start``): ``monotonic()`` is ``t``, ``now()`` is ``epoch + t``
    (the wall-clock seconds stored records carry)."""

    def __init__(self, start: float = 0.0, epoch: float = 0.0) -> None:
        self.t = start
        self.epoch = epoch

    def now(self) -> float:
        return self.epoch + self.t

    def monotonic(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        """Let ``dt`` (>= 0) virtual seconds pass; returns the new time."""
        if dt < 0:
            raise ValueError(f"dt: {dt} is negative; virtual time only goes forward")
        self.t += dt
        return self.t
