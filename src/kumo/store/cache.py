"""A watch-fed copy of the cluster state (an informer, as in Kubernetes' client-go).

API servers read lists and make placement decisions from it instead of re-reading and
re-decoding thousands of records per request. Reads stay consistent: :meth:`sync` asks etcd
for its current revision (one small request) and waits until the copy has caught up, so a
client always sees its own writes. Decoded models are memoised per key and mod_revision.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kumo.store import keys
from kumo.store.base import ClusterStore, Delete, Entry, Put, StoreUnavailable
from kumo.store.records import decode

log = logging.getLogger("kumo.cache")
M = TypeVar("M", bound=BaseModel)


class StoreCache:
    def __init__(self, store: ClusterStore, prefix: str = keys.ROOT) -> None:
        self.store = store
        self.prefix = prefix
        self._entries: dict[str, Entry] = {}
        self._rev = 0
        self._cond = threading.Condition()
        # Decoded models of the prefixes read with models(), kept up to date by _apply.
        self._typed: dict[str, tuple[type[BaseModel], dict[str, tuple[Any, int]]]] = {}
        self._deleted: dict[str, int] = {}  # revision of each key's deletion
        self._floor = 0  # revision of the last full read
        self._versions: dict[str, int] = {}  # changes seen per prefix read with models()
        self._sorted: list[str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="store-cache")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _relist(self) -> int:
        rev = self.store.revision()
        entries = {e.key: e for e in self.store.range(self.prefix)}
        with self._cond:
            self._entries = entries
            self._deleted = {}
            self._floor = rev  # the snapshot holds every change up to here
            self._typed = {}
            self._versions = {p: v + 1 for p, v in self._versions.items()}
            self._sorted = None
            self._rev = max(self._rev, rev)
            self._cond.notify_all()
        return rev

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rev = self._relist()
                watch = self.store.watch(self.prefix, rev + 1)
                for ev in watch:
                    with self._cond:
                        self._apply(ev.kind, ev.key, ev.value, ev.revision)
                        self._rev = max(self._rev, ev.revision)
                        self._cond.notify_all()
                    if self._stop.is_set():
                        watch.cancel()
                        return
            except StoreUnavailable as exc:
                log.warning("cache: %s; relisting when it is back", exc)
                self._stop.wait(0.5)

    def _apply(self, kind: str, key: str, value: bytes, revision: int) -> None:
        """Apply one change unless the copy already holds a newer one for the key (our own
        writes are applied at commit, before their watch events arrive)."""
        old = self._entries.get(key)
        newest = old.mod_revision if old else self._deleted.get(key, 0)
        if revision < newest or revision <= self._floor:
            # Older than what we hold, or already in the last full read: a late event must
            # not bring back a key deleted before that read.
            return
        entry = Entry(key, value, old.create_revision if old else revision, revision)
        if kind == "put":
            self._entries[key] = entry
            self._deleted.pop(key, None)
            if old is None:
                self._sorted = None
        else:
            self._deleted[key] = revision
            if self._entries.pop(key, None) is not None:
                self._sorted = None
        for prefix, (cls, index) in self._typed.items():
            if not key.startswith(prefix):
                continue
            self._versions[prefix] = self._versions.get(prefix, 0) + 1
            if kind == "put":
                try:
                    index[key[len(prefix) :]] = (decode(cls, entry), revision)
                except ValidationError as exc:
                    log.error("cache: %s does not hold a valid %s: %s", key, cls.__name__, exc)
            else:
                index.pop(key[len(prefix) :], None)

    def applied(
        self, ops: Sequence[Put | Delete], revision: int, prefixes: Sequence[str] = ()
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Show a write this process just committed at ``revision`` at once (write-through),
        so its next decision sees it without waiting for the watch. Returns the versions of
        ``prefixes`` just before and just after, so a caller can tell whether anything but
        this write changed them."""
        with self._cond:
            before = self.versions(prefixes)
            for op in ops:
                if isinstance(op, Put):
                    self._apply("put", op.key, op.value, revision)
                else:
                    self._apply("delete", op.key, b"", revision)
            return before, self.versions(prefixes)

    def versions(self, prefixes: Sequence[str]) -> tuple[int, ...]:
        """A counter per prefix (read with models()) that changes with every change there."""
        with self._cond:
            return tuple(self._versions.get(p, 0) for p in prefixes)

    def sync(self, timeout: float = 2.0) -> None:
        """Wait until the copy holds every write etcd has acknowledged so far."""
        target = self.store.revision()  # raises StoreUnavailable when etcd is down
        self.wait_for(target, timeout)

    def wait_for(self, revision: int, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._rev < revision:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._rev >= revision:
                return
        # Revisions can advance without an event under our prefix: read it all again.
        self._relist()

    @property
    def revision(self) -> int:
        return self._rev

    def get(self, key: str) -> Entry | None:
        with self._cond:
            return self._entries.get(key)

    def range(self, prefix: str) -> list[Entry]:
        with self._cond:
            if self._sorted is None:
                self._sorted = sorted(self._entries)
            names = self._sorted
            i = bisect.bisect_left(names, prefix)
            out = []
            while i < len(names) and names[i].startswith(prefix):
                out.append(self._entries[names[i]])
                i += 1
            return out

    def models(self, cls: type[M], prefix: str) -> dict[str, tuple[M, int]]:
        """Like records.load_all, from an index kept up to date as changes arrive: each
        record is decoded once, when it changes, not on every read."""
        with self._cond:
            found = self._typed.get(prefix)
            if found is None:
                index: dict[str, tuple[Any, int]] = {
                    e.key[len(prefix) :]: (decode(cls, e), e.mod_revision)
                    for e in self.range(prefix)
                }
                self._typed[prefix] = (cls, index)
            else:
                index = found[1]
            return dict(index)


class DirectView:
    """The same reads as :class:`StoreCache`, straight from the store (no copy): for tests,
    tools and anything that runs too briefly to keep a cache."""

    def __init__(self, store: ClusterStore) -> None:
        self.store = store
        self._ticks = itertools.count()

    def sync(self, timeout: float = 2.0) -> None:
        pass

    def wait_for(self, revision: int, timeout: float = 2.0) -> None:
        pass

    def applied(
        self, ops: Sequence[Put | Delete], revision: int, prefixes: Sequence[str] = ()
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return self.versions(prefixes), self.versions(prefixes)

    def versions(self, prefixes: Sequence[str]) -> tuple[int, ...]:
        # No copy to keep in step, so never "unchanged": a new value every time.
        return (next(self._ticks),)

    def get(self, key: str) -> Entry | None:
        return self.store.get(key)

    def range(self, prefix: str) -> list[Entry]:
        return self.store.range(prefix)

    def models(self, cls: type[M], prefix: str) -> dict[str, tuple[M, int]]:
        return {
            e.key[len(prefix) :]: (decode(cls, e), e.mod_revision) for e in self.store.range(prefix)
        }
