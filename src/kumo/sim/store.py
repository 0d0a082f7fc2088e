"""The store as each simulated process reaches it.

``Reach`` is one process's path to the shared :class:`MemoryStore`: it raises
:class:`StoreUnavailable` while the path is down (the host is off or partitioned, or the store
is down), and reports every accepted commit to an ``Audit`` with the writer's name, so the
world can log the events written and check that no fenced writer's write got through.

``Writer`` names a writer and its fencing token as the writer itself believes it (an agent's
alive key and ``agent.token``, a leader's key and ``elector.token``). A state write accepted
while that token is stale (the key is gone or at another revision) is the violation
``fenced-writer``: with fencing working the store refuses it, so a violation means a write
went out without its fence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kumo.store import keys
from kumo.store.base import Compare, Delete, Entry, Put, StoreUnavailable, Watch
from kumo.store.memory import MemoryStore


@dataclass
class Writer:
    name: str  # "agent h1", "leader s1", "operator"
    token_key: str = ""  # "" : an unfenced writer (the operator, an API command)
    token: Callable[[], int] = lambda: 0
    # keys this writer may write whatever its token (events; for an agent, a shared pool's
    # id, which the first host to see the pool records under a compare, before its alive
    # key exists); a commit that puts the token key itself (registering, taking the lead)
    # is exempt too
    exempt: tuple[str, ...] = (keys.EVENTS,)


@dataclass(frozen=True)
class Commit:
    writer: str
    revision: int
    ops: tuple[Put | Delete, ...]
    stale: str  # "" or why the writer's token was stale when the commit was accepted


class Audit:
    """Every commit accepted through a ``Reach``, in order, since the world last looked."""

    def __init__(self) -> None:
        self.commits: list[Commit] = []

    def take(self) -> list[Commit]:
        out, self.commits = self.commits, []
        return out


class Reach:
    def __init__(
        self, store: MemoryStore, writer: Writer, up: Callable[[], bool], audit: Audit
    ) -> None:
        self.store = store
        self.writer = writer
        self.up = up
        self.audit = audit

    def _check(self) -> None:
        if not self.up():
            raise StoreUnavailable(f"etcd unreachable from {self.writer.name} (simulated)")

    def get(self, key: str) -> Entry | None:
        self._check()
        return self.store.get(key)

    def range(self, prefix: str) -> list[Entry]:
        self._check()
        return self.store.range(prefix)

    def revision(self) -> int:
        self._check()
        return self.store.revision()

    def commit(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> int | None:
        self._check()
        stale = self._stale(ops)
        rev = self.store.commit(compares, ops)
        if rev is not None:
            self.audit.commits.append(Commit(self.writer.name, rev, tuple(ops), stale))
        return rev

    def _stale(self, ops: Sequence[Put | Delete]) -> str:
        """Why this writer's token is stale, when the write touches more than it may write
        regardless ("" if the token holds or the write is exempt)."""
        w = self.writer
        if not w.token_key or all(op.key.startswith(w.exempt) for op in ops):
            return ""
        if any(op.key == w.token_key for op in ops):
            return ""  # it puts the token key itself: a registration, an election
        entry = self.store.get(w.token_key)
        now = entry.mod_revision if entry else 0
        if now == w.token() and now != 0:
            return ""
        return f"{w.token_key} is at revision {now}, the writer's token is {w.token()}"

    def grant(self, ttl: int) -> int:
        self._check()
        return self.store.grant(ttl)

    def keepalive(self, lease: int) -> None:
        self._check()
        self.store.keepalive(lease)

    def revoke(self, lease: int) -> None:
        self._check()
        self.store.revoke(lease)

    def watch(self, prefix: str, start_revision: int) -> Watch:
        self._check()
        return self.store.watch(prefix, start_revision)

    def close(self) -> None:
        pass
