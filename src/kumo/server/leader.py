"""Leader election among any number of `kumo server` replicas: the leader holds the key
/kumo/leader under its lease. Not etcd's lock recipe: a plain create-if-absent on a leased
key, renewed every second; a leader that cannot renew steps down before its lease can have
expired anywhere else (it counts from before its last successful renewal: ``LeaseKeeper``).
The revision of the leader key is the leader's fencing token: every controller write compares
it (``fence()``), so a deposed leader's writes are refused; one refusal and it steps down."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from kumo.clock import SYSTEM_CLOCK, Clock
from kumo.store import keys
from kumo.store.base import ClusterStore, Compare, LeaseExpired, Put, StoreUnavailable
from kumo.store.lease import Fence, Fenced, LeaseKeeper

log = logging.getLogger("kumo.leader")


class LeaderElector:
    def __init__(
        self,
        store: ClusterStore,
        ident: str,
        ttl: int = 5,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.ident = ident
        self.keeper = LeaseKeeper(store, ttl, clock)
        self.token = 0  # the leader key's mod revision while we hold it: our fencing token

    @property
    def lease(self) -> int:
        return self.keeper.lease

    @property
    def is_leader(self) -> bool:
        return self.keeper.valid

    def fence(self) -> Fence:
        """The compare every leader write carries: the leader key is still the one we put.
        :class:`Fenced` when we do not lead (by our own clock)."""
        if not self.is_leader:
            raise Fenced(f"leader {self.ident}: not leading; no leader writes")
        return Fence(f"leader {self.ident}", (Compare(keys.LEADER, self.token),))

    def step(self) -> bool:
        """One round: renew if leading, else try to lead. Returns whether we lead."""
        try:
            if self.keeper.lease:
                self.keeper.renew()
                return True
            lease = self.keeper.grant()
            rev = self.store.commit(
                [Compare(keys.LEADER, 0)], [Put(keys.LEADER, self.ident.encode(), lease)]
            )
            if rev is None:
                self.keeper.revoke()
                return False
            self.token = rev
            log.info("%s: leading (token %d)", self.ident, rev)
            return True
        except LeaseExpired:
            log.warning("%s: lost the leader lease", self.ident)
            self.keeper.drop()
            return False
        except StoreUnavailable as exc:
            if self.keeper.lease and not self.is_leader:
                log.warning("%s: stepping down, cannot renew: %s", self.ident, exc)
                self.keeper.drop()
            return self.is_leader

    def step_down(self, why: str) -> None:
        """Stop leading at once (a leader write was refused: someone else leads)."""
        log.warning("%s: stepping down: %s", self.ident, why)
        self.resign()

    def resign(self) -> None:
        with contextlib.suppress(StoreUnavailable, LeaseExpired):
            self.keeper.revoke()
        self.keeper.drop()

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
            except Fenced as exc:
                elector.step_down(str(exc))
            stop.wait(period)
            continue
        stop.wait(poll)
    elector.resign()


def _leader_free(elector: LeaderElector) -> bool:
    try:
        return elector.store.get(keys.LEADER) is None
    except StoreUnavailable:
        return False
