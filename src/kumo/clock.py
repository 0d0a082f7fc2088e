"""Time and identity as injected effects.

Effectful code reads the time and draws new ids only through a ``Clock`` and an ``Ids`` handed
to it, so a simulated run can pass a virtual clock and counted ids and replay byte for byte.
The system implementations are chosen where the program is assembled (the server, the agent,
the CLI) or as an explicit parameter default; nothing looks them up from a module global.
Pure code takes a plain ``now: float`` instead (see ``[tool.importlinter]`` in pyproject).
"""

from __future__ import annotations

import time
import uuid
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch: what stored records carry."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back: for deadlines and intervals on this process only."""
        ...


class Ids(Protocol):
    def new_id(self) -> str:
        """A fresh id, distinct from every other this source gave (and, for the system one,
        from every other writer's in practice)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class SystemIds:
    """Random hex digits, 12 (48 bits) by default: a task's id, an event key's tail; 32 for
    ids that must never collide across a site's lifetime (a shared pool's id)."""

    def __init__(self, digits: int = 12) -> None:
        self.digits = digits

    def new_id(self) -> str:
        return uuid.uuid4().hex[: self.digits]


class CountedIds:
    """Deterministic ids ``<prefix>000001``, ``<prefix>000002``, … for tests and simulation."""

    def __init__(self, prefix: str = "id") -> None:
        self.prefix = prefix
        self.count = 0

    def new_id(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count:06d}"


SYSTEM_CLOCK: Clock = SystemClock()
SYSTEM_IDS: Ids = SystemIds()
