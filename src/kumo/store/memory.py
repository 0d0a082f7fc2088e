"""An in-memory ClusterStore with a pluggable clock, for the simulator and unit tests.

Leases expire by the clock given (``time.monotonic`` by default; the simulator passes its
virtual clock). It obeys the same contract tests as the etcd store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from kumo.store.base import Compare, Delete, Entry, LeaseExpired, Put, WatchEvent


@dataclass
class _Lease:
    ttl: int
    expires: float
    keys: set[str] = field(default_factory=set)


class _MemoryWatch:
    def __init__(self, store: MemoryStore, prefix: str) -> None:
        self._store = store
        self.prefix = prefix
        self._events: list[WatchEvent] = []
        self._cond = threading.Condition()
        self._cancelled = False

    def _push(self, event: WatchEvent) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def __iter__(self) -> Iterator[WatchEvent]:
        while True:
            with self._cond:
                if not self._events and not self._cancelled:
                    self._cond.wait(timeout=0.1)
                if self._cancelled:
                    return
                event = self._events.pop(0) if self._events else None
            if event is None:
                # Outside our lock: the store takes its own lock, then ours, to push.
                self._store.expire_leases()
                continue
            yield event

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()
        self._store._unwatch(self)


class MemoryStore:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        import time

        self._clock = clock or time.monotonic
        self._lock = threading.RLock()
        self._data: dict[str, Entry] = {}
        self._rev = 1  # etcd starts at revision 1 too
        self._history: list[WatchEvent] = []
        self._leases: dict[int, _Lease] = {}
        self._next_lease = 0x1000
        self._watches: list[_MemoryWatch] = []

    # reads
    def get(self, key: str) -> Entry | None:
        self.expire_leases()
        with self._lock:
            return self._data.get(key)

    def range(self, prefix: str) -> list[Entry]:
        self.expire_leases()
        with self._lock:
            return [self._data[k] for k in sorted(self._data) if k.startswith(prefix)]

    def revision(self) -> int:
        self.expire_leases()
        with self._lock:
            return self._rev

    # writes
    def commit(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> int | None:
        self.expire_leases()
        with self._lock:
            for c in compares:
                entry = self._data.get(c.key)
                if (entry.mod_revision if entry else 0) != c.mod_revision:
                    return None
            for op in ops:
                if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                    raise LeaseExpired(f"lease {op.lease:x} does not exist")
            if not ops:
                return self._rev
            self._rev += 1
            for op in ops:
                self._apply(op)
            return self._rev

    def _apply(self, op: Put | Delete) -> None:
        rev = self._rev
        if isinstance(op, Put):
            old = self._data.get(op.key)
            if old and old.lease and old.lease in self._leases:
                self._leases[old.lease].keys.discard(op.key)
            self._data[op.key] = Entry(
                op.key, op.value, old.create_revision if old else rev, rev, op.lease
            )
            if op.lease:
                self._leases[op.lease].keys.add(op.key)
            self._emit(WatchEvent("put", op.key, op.value, rev))
        elif op.key in self._data:
            del self._data[op.key]
            self._emit(WatchEvent("delete", op.key, b"", rev))

    def _emit(self, event: WatchEvent) -> None:
        self._history.append(event)
        for w in list(self._watches):
            if event.key.startswith(w.prefix):
                w._push(event)

    # leases
    def grant(self, ttl: int) -> int:
        with self._lock:
            self._next_lease += 1
            self._leases[self._next_lease] = _Lease(ttl, self._clock() + ttl)
            return self._next_lease

    def keepalive(self, lease: int) -> None:
        self.expire_leases()
        with self._lock:
            found = self._leases.get(lease)
            if found is None:
                raise LeaseExpired(f"lease {lease:x} expired or was revoked")
            found.expires = self._clock() + found.ttl

    def revoke(self, lease: int) -> None:
        with self._lock:
            self._drop_lease(lease)

    def extend_leases(self) -> None:
        """Every lease at its full TTL again from now: what etcd does when it gets a new
        leader, so an outage of the whole store expires nobody's lease (the simulator's
        ``store up``)."""
        now = self._clock()
        with self._lock:
            for lease in self._leases.values():
                lease.expires = now + lease.ttl

    def expire_leases(self) -> None:
        now = self._clock()
        with self._lock:
            for lease_id in [i for i, le in self._leases.items() if le.expires <= now]:
                self._drop_lease(lease_id)

    def _drop_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is None or not lease.keys:
            return
        self._rev += 1
        for key in sorted(lease.keys):
            self._apply(Delete(key))

    # watches
    def watch(self, prefix: str, start_revision: int) -> _MemoryWatch:
        with self._lock:
            w = _MemoryWatch(self, prefix)
            for event in self._history:
                if event.revision >= start_revision and event.key.startswith(prefix):
                    w._push(event)
            self._watches.append(w)
            return w

    def _unwatch(self, w: _MemoryWatch) -> None:
        with self._lock:
            if w in self._watches:
                self._watches.remove(w)

    def close(self) -> None:
        for w in list(self._watches):
            w.cancel()
