"""The agent's small HTTP endpoint, for what only the host has: a VM's serial console log,
and a sink other agents measure the storage link with before a migration. Callers present
the cluster's agent secret from etcd."""

from __future__ import annotations

import contextlib
import hmac
import http.client
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

_CONSOLE = re.compile(r"^/v1/console/([a-z][a-z0-9-]{0,62})$")
_INCOMING = re.compile(r"^/v1/incoming/([a-z][a-z0-9-]{0,62})$")
Incoming = Callable[[str, str], tuple[int, str]]  # (method, vm) -> (status, message)
PROBE_MAX_BYTES = 256 * 2**20


def serve(
    address: str,
    port: int,
    log_dir: str,
    secret: Callable[[], str],
    incoming: Incoming | None = None,
    lease: Callable[[], str] | None = None,
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if hmac.compare_digest(given.encode(), secret().encode()):
                return True
            self._send(401, b"unauthorized")
            return False

        def _incoming(self, method: str) -> bool:
            """``POST|DELETE /v1/incoming/VM``: make (or remove) the disk of a VM about to
            arrive with its host-local disk copied."""
            m = _INCOMING.fullmatch(urlparse(self.path).path)
            if not m or incoming is None:
                return False
            if self._authorized():
                code, message = incoming(method, m.group(1))
                self._send(code, message.encode())
            return True

        def do_DELETE(self) -> None:
            if not self._incoming("DELETE"):
                self._send(404, b"not found")

        def do_POST(self) -> None:
            """``/v1/sink?seconds=S``: read what the caller sends for S seconds (at most
            256 MiB), then answer how many bytes arrived and in how long."""
            if self._incoming("POST"):
                return
            url = urlparse(self.path)
            if url.path != "/v1/sink":
                self._send(404, b"not found")
                return
            if not self._authorized():
                return
            seconds = min(2.0, float(parse_qs(url.query).get("seconds", ["0.3"])[0]))
            self.connection.settimeout(seconds + 1)
            got, first = 0, None
            try:
                while got < PROBE_MAX_BYTES:
                    chunk = self.rfile.read1(1 << 16)
                    if not chunk:
                        break
                    first = first or time.monotonic()
                    got += len(chunk)
                    if time.monotonic() - first >= seconds:
                        break
            except TimeoutError:
                pass
            took = time.monotonic() - first if first else 0.0
            self.close_connection = True
            self._send(200, json.dumps({"bytes": got, "seconds": took}).encode())

        def do_GET(self) -> None:
            if not self._authorized():
                return
            url = urlparse(self.path)
            if url.path == "/v1/lease" and lease is not None:
                # a peer deciding whether etcd is down for everyone (agent/selffence.py)
                self._send(200, lease().encode())
                return
            m = _CONSOLE.fullmatch(url.path)
            if not m:
                self._send(404, b"not found")
                return
            n = int(parse_qs(url.query).get("bytes", ["65536"])[0])
            path = Path(log_dir) / f"{m.group(1)}-serial.log"
            try:
                with path.open("rb") as f:
                    f.seek(0, 2)
                    size = f.tell()
                    f.seek(max(0, size - n))
                    data = f.read()
            except FileNotFoundError:
                self._send(404, b"no console log")
                return
            self._send(200, data)

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="agent-http").start()
    return server


def probe_link(address: str, port: int, secret: str, seconds: float = 0.3) -> float | None:
    """The rate in MiB/s at which this host reaches ``address`` (another agent's sink),
    measured by the receiver; None when the probe fails."""
    head = (
        f"POST /v1/sink?seconds={seconds} HTTP/1.1\r\nHost: {address}\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Length: {PROBE_MAX_BYTES}\r\n\r\n"
    ).encode()
    block = bytes(1 << 16)
    try:
        with socket.create_connection((address, port), timeout=seconds + 3) as sock:
            sock.sendall(head)
            sock.setblocking(False)
            answer = b""
            deadline = time.monotonic() + seconds + 3
            while time.monotonic() < deadline:
                readable, writable, _ = select.select([sock], [sock], [], 0.1)
                if readable:
                    data = sock.recv(4096)
                    answer += data
                    if not data or (b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}")):
                        break
                elif writable:
                    with contextlib.suppress(BlockingIOError, BrokenPipeError):
                        sock.send(block)
        if not answer.startswith(b"HTTP/1.0 200") and not answer.startswith(b"HTTP/1.1 200"):
            return None
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        if body["seconds"] <= 0:
            return None
        return float(body["bytes"]) / float(body["seconds"]) / 2**20
    except (OSError, ValueError, KeyError):
        return None


def call(
    address: str, port: int, secret: str, method: str, path: str, timeout: float = 300
) -> tuple[int, str]:
    """One request to another agent; (status, body), status 0 when it could not be reached."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {secret}"})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    except OSError as exc:
        return 0, f"agent at {address}:{port} unreachable: {exc}"
    finally:
        conn.close()
