"""The CLI's HTTP client and where it finds the server and token: --url/--token flags, then
KUMO_URL/KUMO_TOKEN, then the config file (KUMO_CONFIG, ~/.config/kumo/config.json, and the
running lab's /run/kumo-lab/client.json)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

LAB_CLIENT_CONFIG = Path("/run/kumo-lab/client.json")


class ClientError(Exception):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Settings:
    url: str
    token: str


def config_files() -> list[Path]:
    files = []
    if os.environ.get("KUMO_CONFIG"):
        files.append(Path(os.environ["KUMO_CONFIG"]))
    files.append(Path.home() / ".config" / "kumo" / "config.json")
    files.append(LAB_CLIENT_CONFIG)
    return files


def settings(url: str | None, token: str | None) -> Settings:
    url = url or os.environ.get("KUMO_URL")
    token = token or os.environ.get("KUMO_TOKEN")
    for f in config_files():
        if url and token:
            break
        if f.is_file():
            data = json.loads(f.read_text())
            url = url or data.get("url")
            token = token or data.get("token")
    if not url:
        raise ClientError(
            "no server: give --url, set KUMO_URL, or write "
            '~/.config/kumo/config.json ({"url": ..., "token": ...})'
        )
    return Settings(url.rstrip("/"), token or "")


class Client:
    def __init__(self, s: Settings, timeout: float = 30) -> None:
        self.s = s
        self.http = httpx.Client(
            base_url=s.url + "/api/v1",
            timeout=timeout,
            headers={"Authorization": f"Bearer {s.token}"},
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ClientError(f"kumo server at {self.s.url} is unreachable: {exc}") from exc
        if r.status_code >= 400:
            raise ClientError(error_message(r), r.status_code)
        if r.status_code == 204 or not r.content:  # no content (a delete)
            return None
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return r.text

    def stream(self, path: str, **kw: Any) -> Any:
        return self.http.stream("GET", path, timeout=None, **kw)


def error_message(r: httpx.Response) -> str:
    """What the server said went wrong, starting with the field at fault (the API's error
    body: ``detail``, and ``field`` or ``errors``; a 422's detail names each field)."""
    if r.status_code == 401:
        return "unauthorized: check the token (--token, KUMO_TOKEN or the config file)"
    try:
        body = r.json()
    except ValueError:
        return r.text
    if not isinstance(body, dict) or "detail" not in body:
        return r.text
    detail, field = str(body["detail"]), body.get("field")
    if field and not detail.startswith(f"{field}:"):
        return f"{field}: {detail}"
    return detail
