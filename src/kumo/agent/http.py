"""The agent's small HTTP endpoint, for what only the host has: a VM's serial console log.
Callers (the API servers) present the cluster's agent secret from etcd."""

from __future__ import annotations

import hmac
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

_CONSOLE = re.compile(r"^/v1/console/([a-z][a-z0-9-]{0,62})$")


def serve(address: str, port: int, log_dir: str, secret: Callable[[], str]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), secret().encode()):
                self._send(401, b"unauthorized")
                return
            url = urlparse(self.path)
            m = _CONSOLE.match(url.path)
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
