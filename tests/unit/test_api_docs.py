"""/api/v1/docs works without internet: the page and every file it loads come from the
server itself (Swagger UI ships in the fastapi-offline package), and nothing points at
another host, the public spec validator included."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from kumo.server.app import create_app
from kumo.server.service import ClusterService
from kumo.store.memory import MemoryStore


def test_the_docs_page_loads_only_from_the_server() -> None:
    client = TestClient(create_app(ClusterService(MemoryStore())))  # no token: open
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert len(assets) == 4, assets  # CSS, icon, Swagger UI's script, the OpenAPI document
    for url in assets:
        assert url.startswith("/api/v1/"), url  # this server, not a CDN
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 1000, url
    assert not re.search(r"(https?:)?//[a-z]", html)  # no other host, in any form
    assert '"validatorUrl": null' in html
    # FastAPI publishes OpenAPI 3.1, which Swagger UI renders from version 5 on (4 shows
    # "Unable to render this definition").
    assert client.get("/api/v1/openapi.json").json()["openapi"].startswith("3.1")
    bundle = client.get("/api/v1/docs/static/swagger-ui-bundle.js").text
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.', bundle)
    assert version and int(version.group(1)) >= 5
