"""The liveness rule, in one place: a host is up while its agent's alive key exists.

The agent writes ``keys.ALIVE + host`` on its lease; the store deletes it when the lease
expires, so the key's presence is the whole rule (DESIGN §6). Everything that asks whether a
host is up (the API's views, the scheduler's host list, the migrator) asks here."""

from __future__ import annotations

from typing import Protocol

from kumo.store import keys
from kumo.store.base import Entry


class _Reader(Protocol):
    """A store or a view of one (``StoreCache``, ``DirectView``)."""

    def get(self, key: str) -> Entry | None: ...

    def range(self, prefix: str) -> list[Entry]: ...


def alive_hosts(reader: _Reader) -> set[str]:
    """The hosts whose agent holds a live lease."""
    return {e.key[len(keys.ALIVE) :] for e in reader.range(keys.ALIVE)}


def is_alive(reader: _Reader, host: str) -> bool:
    """Whether ``host``'s agent holds a live lease (one read, not the whole prefix)."""
    return reader.get(keys.ALIVE + host) is not None
