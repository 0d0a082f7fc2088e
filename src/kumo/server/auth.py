"""API tokens: random secrets, stored only as SHA-256 hashes. The first server to start on an
empty cluster creates the admin token and prints it once; a compare-and-swap on a marker key
makes sure only one replica does. The agent secret (server → agent console requests) is
created at the same time."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

from kumo.model.common import Frozen
from kumo.store import keys
from kumo.store.base import ClusterStore, Compare, Put
from kumo.store.records import decode, encode

BOOTSTRAP = keys.ROOT + "bootstrap"
AGENT_SECRET = keys.AGENT_SECRET


class TokenRecord(Frozen):
    name: str
    created_at: float


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bootstrap(store: ClusterStore) -> str | None:
    """Create the admin token on an empty cluster; returns it (once), else None."""
    token = "kumo_" + secrets.token_urlsafe(32)
    record = TokenRecord(name="admin", created_at=time.time())
    ok = store.commit(
        [Compare(BOOTSTRAP, 0)],
        [
            Put(BOOTSTRAP, b"done"),
            Put(keys.TOKENS + token_hash(token), encode(record)),
            Put(AGENT_SECRET, secrets.token_urlsafe(32).encode()),
        ],
    )
    return token if ok is not None else None


class TokenChecker:
    """Checks bearer tokens against the store, remembering valid ones for a few seconds."""

    def __init__(self, store: ClusterStore, ttl: float = 10.0) -> None:
        self.store = store
        self.ttl = ttl
        self._valid: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def check(self, token: str) -> str | None:
        """The token's name when valid, else None."""
        h = token_hash(token)
        now = time.monotonic()
        with self._lock:
            hit = self._valid.get(h)
            if hit and hit[1] > now:
                return hit[0]
        entry = self.store.get(keys.TOKENS + h)
        if entry is None:
            return None
        name = decode(TokenRecord, entry).name
        with self._lock:
            self._valid[h] = (name, now + self.ttl)
        return name
