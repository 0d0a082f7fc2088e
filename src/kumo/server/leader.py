"""Leader election among any number of `kumo server` replicas: the leader holds the key
/kumo/leader under its lease. Not etcd's lock recipe: a plain create-if-absent on a leased
key, renewed every second; a leader that cannot renew steps down before its lease can have
expired anywhere else (it counts from before its last successful renewal)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from kumo.store import keys
from kumo.store.base import ClusterStore, Compare, LeaseExpired, Put, StoreUnavailable

log = logging.getLogger("kumo.leader")


class LeaderElector:
    def __init__(
        self,
        store: ClusterStore,
        ident: str,
        ttl: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ident = ident
        self.ttl = ttl
        self.clock = clock
        self.lease = 0
        self.valid_until = 0.0  # by our own clock; past it we are not leader

    @property
    def is_leader(self) -> bool:
        return self.lease != 0 and self.clock() < self.valid_until

    def step(self) -> bool:
        """One round: renew if leading, else try to lead. Returns whether we lead."""
        started = self.clock()
        try:
            if self.lease:
                self.store.keepalive(self.lease)
                self.valid_until = started + self.ttl - 1
                return True
            lease = self.store.grant(self.ttl)
            if (
                self.store.commit(
                    [Compare(keys.LEADER, 0)], [Put(keys.LEADER, self.ident.encode(), lease)]
                )
                is None
            ):
                self.store.revoke(lease)
                return False
            self.lease = lease
            self.valid_until = started + self.ttl - 1
            log.info("%s: leading", self.ident)
            return True
        except LeaseExpired:
            log.warning("%s: lost the leader lease", self.ident)
            self.lease = 0
            return False
        except StoreUnavailable as exc:
            if self.lease and not self.is_leader:
                log.warning("%s: stepping down, cannot renew: %s", self.ident, exc)
                self.lease = 0
            return self.is_leader

    def resign(self) -> None:
        if self.lease:
            with contextlib.suppress(StoreUnavailable):
                self.store.revoke(self.lease)
            self.lease = 0

    def current(self) -> str | None:
        entry = self.store.get(keys.LEADER)
        return entry.value.decode() if entry else None


def run_elected(
    elector: LeaderElector,
    work: Callable[[], None],
    stop: threading.Event,
    period: float = 1.0,
    poll: float = 0.2,
) -> None:
    """Keep or seek leadership and run ``work`` every ``period`` while leading. A standby
    looks for a free leader key every ``poll`` (one cheap read), so it takes over as soon as
    the old leader's lease has expired, not up to a period later."""
    while not stop.is_set():
        if (elector.lease or _leader_free(elector)) and elector.step():
            try:
                work()
            except StoreUnavailable as exc:
                log.warning("controllers: %s", exc)
            stop.wait(period)
            continue
        stop.wait(poll)
    elector.resign()


def _leader_free(elector: LeaderElector) -> bool:
    try:
        return elector.store.get(keys.LEADER) is None
    except StoreUnavailable:
        return False
