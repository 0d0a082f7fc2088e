"""A lease held by one process, and the fencing token its key gives (DESIGN §6).

``LeaseKeeper`` holds a lease and knows, by its holder's own monotonic clock, when the lease
may have expired in the store: the TTL counted from *before* the grant or keep-alive request
was sent (the store starts counting later, when the request arrives), less a margin. Past
that deadline the holder says it lost the lease, before anyone else can see it gone.

A ``Fence`` is what a writer adds to each of its commits: the mod revision of the key it put
under its lease (the leader key; an agent's alive key) and, for a VM, the placement revision
it acted on. A writer whose key expired or was replaced, or whose VM was placed elsewhere,
has every fenced write refused by the store (tests/unit/test_fencing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from kumo.clock import SYSTEM_CLOCK, Clock
from kumo.store.base import ClusterStore, Compare, LeaseExpired


class Fenced(Exception):
    """A fenced write was refused because the writer's token no longer holds: the writer
    must stop acting (a deposed leader, a cut-off agent), not try again."""


@dataclass(frozen=True)
class Fence:
    holder: str  # who writes, for messages: "leader s1", "agent h1"
    compares: tuple[Compare, ...] = ()

    def on(self, key: str, revision: int) -> Fence:
        """This fence, holding also while ``key`` is at ``revision``."""
        return Fence(self.holder, (*self.compares, Compare(key, revision)))

    def check(self, store: ClusterStore) -> None:
        """After a refused commit: raise :class:`Fenced` when the fence no longer holds (the
        refusal was not a lost race the caller may handle as before)."""
        for c in self.compares:
            entry = store.get(c.key)
            if (entry.mod_revision if entry else 0) != c.mod_revision:
                raise Fenced(
                    f"{self.holder}: write refused, {c.key} is no longer at revision "
                    f"{c.mod_revision}; no more writes under this token"
                )


NO_FENCE = Fence("unfenced")


class LeaseKeeper:
    """A lease of ``ttl`` seconds and its own-clock deadline (``margin`` before the TTL),
    counted on ``clock.monotonic()``."""

    def __init__(
        self,
        store: ClusterStore,
        ttl: int,
        clock: Clock = SYSTEM_CLOCK,
        margin: float = 1.0,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.margin = margin
        self.lease = 0
        self.deadline = 0.0  # by our own clock; past it the lease may be gone
        self.failing = False  # the last renewal attempt did not reach the store

    @property
    def valid(self) -> bool:
        """Whether the lease surely still exists in the store."""
        return self.lease != 0 and self.clock.monotonic() < self.deadline

    def grant(self) -> int:
        """A new lease (the old one, if any, is forgotten, not revoked)."""
        started = self.clock.monotonic()
        self.lease = self.store.grant(self.ttl)
        self.deadline = started + self.ttl - self.margin
        self.failing = False
        return self.lease

    def renew(self) -> None:
        """Keep the lease alive; :class:`LeaseExpired` (and no lease) when it is gone."""
        started = self.clock.monotonic()
        try:
            self.store.keepalive(self.lease)
        except LeaseExpired:
            self.drop()
            raise
        except Exception:
            self.failing = True  # the store out of reach: the lease runs out unrenewed
            raise
        self.failing = False
        self.deadline = started + self.ttl - self.margin

    def revoke(self) -> None:
        lease, self.lease = self.lease, 0
        if lease:
            self.store.revoke(lease)

    def drop(self) -> None:
        self.lease = 0
        self.deadline = 0.0
