"""A watch-fed copy of the cluster state (an informer, as in Kubernetes' client-go).

API servers read lists and make placement decisions from it instead of re-reading and
re-decoding thousands of records per request. Reads stay consistent: :meth:`sync` asks etcd
for its current revision (one small request) and waits until the copy has caught up, so a
client always sees its own writes. Decoded models are memoised per key and mod_revision.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from typing import Any, TypeVar

from pydantic import BaseModel

from kumo.store import keys
from kumo.store.base import ClusterStore, Entry, StoreUnavailable
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
        self._memo: dict[str, tuple[int, Any]] = {}
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
                        if ev.kind == "put":
                            old = self._entries.get(ev.key)
                            self._entries[ev.key] = Entry(
                                ev.key,
                                ev.value,
                                old.create_revision if old else ev.revision,
                                ev.revision,
                            )
                            if old is None:
                                self._sorted = None
                        elif self._entries.pop(ev.key, None) is not None:
                            self._sorted = None
                        self._rev = max(self._rev, ev.revision)
                        self._cond.notify_all()
                    if self._stop.is_set():
                        watch.cancel()
                        return
            except StoreUnavailable as exc:
                log.warning("cache: %s; relisting when it is back", exc)
                self._stop.wait(0.5)

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
        """Like records.load_all, decoding each record once per revision."""
        out: dict[str, tuple[M, int]] = {}
        for e in self.range(prefix):
            memo = self._memo.get(e.key)
            if memo is not None and memo[0] == e.mod_revision:
                model = memo[1]
            else:
                model = decode(cls, e)
                self._memo[e.key] = (e.mod_revision, model)
            out[e.key[len(prefix) :]] = (model, e.mod_revision)
        return out


class DirectView:
    """The same reads as :class:`StoreCache`, straight from the store (no copy): for tests,
    tools and anything that runs too briefly to keep a cache."""

    def __init__(self, store: ClusterStore) -> None:
        self.store = store

    def sync(self, timeout: float = 2.0) -> None:
        pass

    def wait_for(self, revision: int, timeout: float = 2.0) -> None:
        pass

    def get(self, key: str) -> Entry | None:
        return self.store.get(key)

    def range(self, prefix: str) -> list[Entry]:
        return self.store.range(prefix)

    def models(self, cls: type[M], prefix: str) -> dict[str, tuple[M, int]]:
        return {
            e.key[len(prefix) :]: (decode(cls, e), e.mod_revision) for e in self.store.range(prefix)
        }
