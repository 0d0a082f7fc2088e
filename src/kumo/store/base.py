"""The ClusterStore interface: a revisioned key-value store with compare-and-swap
transactions, leases and watches: exactly the etcd primitives kumo builds on (DESIGN D2).

Rules every implementation keeps (tests/contract/test_store_contract.py):
- every successful write advances the store's revision by one, whatever it touched;
- ``commit`` applies all its operations or none: a failed compare changes nothing;
- ``Compare(key, 0)`` holds when the key does not exist (etcd's mod_revision of a missing key);
- a key attached to a lease disappears (with a delete event) when the lease expires or is revoked;
- a watch from revision R reports every change with revision >= R under its prefix, in order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


class StoreUnavailable(Exception):
    """The store cannot be reached; the message names the endpoint and the cause."""


class LeaseExpired(Exception):
    """The lease is gone: it expired or was revoked. Keys bound to it are deleted."""


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Compare:
    """Holds when ``key``'s mod_revision equals ``mod_revision`` (0: the key is absent)."""

    key: str
    mod_revision: int


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    key: str
    value: bytes  # empty for deletes
    revision: int


class Watch(Protocol):
    def __iter__(self) -> Iterator[WatchEvent]: ...

    def cancel(self) -> None: ...


class ClusterStore(Protocol):
    def get(self, key: str) -> Entry | None: ...

    def range(self, prefix: str) -> list[Entry]:
        """Every entry whose key starts with ``prefix``, sorted by key."""
        ...

    def revision(self) -> int: ...

    def commit(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> int | None:
        """Apply ``ops`` atomically if every compare holds; the new revision, else None."""
        ...

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; returns its id."""
        ...

    def keepalive(self, lease: int) -> None:
        """Renew ``lease`` to its full TTL; :class:`LeaseExpired` when it is gone."""
        ...

    def revoke(self, lease: int) -> None: ...

    def watch(self, prefix: str, start_revision: int) -> Watch: ...

    def close(self) -> None: ...
