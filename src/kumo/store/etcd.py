"""ClusterStore on etcd v3, through its JSON gateway with etcd3gw (maintained by OpenStack).

Requests go through ``Etcd3Client.post`` so every key and revision is read exactly as etcd
sent it; the watch reads the gateway's event stream itself, so that a broken stream ends
the iteration with :class:`StoreUnavailable` instead of dying silently in a thread.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from kumo.store.base import (
    Compare,
    Delete,
    Entry,
    LeaseExpired,
    Put,
    StoreUnavailable,
    WatchEvent,
)


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: str) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


def _entry(kv: dict[str, Any]) -> Entry:
    return Entry(
        key=_unb64(kv["key"]).decode(),
        value=_unb64(kv.get("value", "")),
        create_revision=int(kv.get("create_revision", 0)),
        mod_revision=int(kv.get("mod_revision", 0)),
        lease=int(kv.get("lease", 0)),
    )


class _EtcdWatch:
    def __init__(self, store: EtcdStore, prefix: str, start_revision: int) -> None:
        self._store = store
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": start_revision,
            }
        }
        try:
            self._resp = store.client.session.post(
                store.client.get_url("/watch"), json=body, stream=True, timeout=(3, None)
            )
        except (requests.RequestException, Etcd3Exception) as exc:
            raise store.unavailable(exc) from exc

    def __iter__(self) -> Iterator[WatchEvent]:
        try:
            for line in self._resp.iter_lines():
                if not line:
                    continue
                result = json.loads(line).get("result", {})
                for ev in result.get("events", []):
                    entry = _entry(ev["kv"])
                    if ev.get("type") == "DELETE":
                        yield WatchEvent("delete", entry.key, b"", entry.mod_revision)
                    else:
                        yield WatchEvent("put", entry.key, entry.value, entry.mod_revision)
        except (requests.RequestException, AttributeError, ValueError) as exc:
            if self._resp.raw is None or self._resp.raw.closed:
                return  # cancelled
            raise self._store.unavailable(exc) from exc
        if not getattr(self, "_cancelled", False):
            raise self._store.unavailable(RuntimeError("watch stream ended"))

    def cancel(self) -> None:
        self._cancelled = True
        self._resp.close()


class EtcdStore:
    def __init__(self, endpoint: str, timeout: float = 5.0) -> None:
        url = urlparse(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"etcd endpoint: {endpoint!r} is not http(s)://host:port")
        self.endpoint = endpoint
        self.client = Etcd3Client(
            host=url.hostname, port=url.port or 2379, protocol=url.scheme, timeout=timeout
        )
        # etcd is reached directly: never through a proxy from the environment (and not
        # paying for the environment lookup on every request).
        self.client.session.trust_env = False

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"etcd at {self.endpoint} is unreachable: {exc}")

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self.client.post(self.client.get_url(path), json=body)
        except Etcd3Exception as exc:
            detail = f"{exc} {exc.detail_text or ''}".strip()
            if "lease not found" in detail:
                raise LeaseExpired(f"lease expired or was revoked ({detail})") from exc
            raise self.unavailable(exc) from exc
        except requests.RequestException as exc:
            raise self.unavailable(exc) from exc
        return result

    def get(self, key: str) -> Entry | None:
        kvs = self._post("/kv/range", {"key": _b64(key)}).get("kvs", [])
        return _entry(kvs[0]) if kvs else None

    def range(self, prefix: str) -> list[Entry]:
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        return [_entry(kv) for kv in self._post("/kv/range", body).get("kvs", [])]

    def revision(self) -> int:
        return int(self._post("/kv/range", {"key": _b64("\0"), "limit": 1})["header"]["revision"])

    def commit(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> int | None:
        body = {
            "compare": [
                {
                    "key": _b64(c.key),
                    "result": "EQUAL",
                    "target": "MOD",
                    "mod_revision": c.mod_revision,
                }
                for c in compares
            ],
            "success": [
                {"request_put": {"key": _b64(op.key), "value": _b64(op.value), "lease": op.lease}}
                if isinstance(op, Put)
                else {"request_delete_range": {"key": _b64(op.key)}}
                for op in ops
            ],
        }
        result = self._post("/kv/txn", body)
        if not result.get("succeeded", False):
            return None
        return int(result["header"]["revision"])

    def grant(self, ttl: int) -> int:
        return int(self._post("/lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def keepalive(self, lease: int) -> None:
        result = self._post("/lease/keepalive", {"ID": lease})
        if int(result.get("result", {}).get("TTL", -1)) <= 0:
            raise LeaseExpired(f"lease {lease:x} expired or was revoked")

    def revoke(self, lease: int) -> None:
        with contextlib.suppress(LeaseExpired):
            self._post("/kv/lease/revoke", {"ID": lease})

    def watch(self, prefix: str, start_revision: int) -> _EtcdWatch:
        return _EtcdWatch(self, prefix, start_revision)

    def close(self) -> None:
        self.client.session.close()
