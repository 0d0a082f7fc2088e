"""The REST API (FastAPI, /api/v1, OpenAPI at /api/v1/openapi.json, Swagger UI at
/api/v1/docs). Every route but /healthz, the OpenAPI document and the docs page needs a
bearer token; a missing or wrong one gets 401 without detail.

The routes live in ``kumo.server.routes``, one router per resource; this assembles them.
The OpenAPI document is a contract, checked by schemathesis (tests/unit/test_api_contract.py):
each route declares every status it answers with (``errors.responses``), names and ids carry
their patterns, and every error has the shape of ``ErrorBody``."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from kumo.server import docs, errors
from kumo.server.auth import TokenChecker
from kumo.server.leader import LeaderElector
from kumo.server.routes.activity import activity_router
from kumo.server.routes.common import API, JsonRoute
from kumo.server.routes.ha import ha_router
from kumo.server.routes.health import health_router
from kumo.server.routes.hosts import hosts_router
from kumo.server.routes.migrations import migrations_router
from kumo.server.routes.resources import resources_router
from kumo.server.routes.vms import vms_router
from kumo.server.service import ClusterService

DESCRIPTION = f"""kumo's REST API: VMs, hosts, pools, networks, images, tasks and events.

Every route needs `Authorization: Bearer <token>` (the Authorize button), except `/healthz`,
this document (`{API}/openapi.json`) and this page (`{API}/docs`). The first server started
on an empty cluster prints the admin token once.

{errors.STATUS_CODES}"""


def create_app(
    service: ClusterService,
    elector: LeaderElector | None = None,
    agents: httpx.Client | None = None,
) -> FastAPI:
    """The API over ``service``; ``agents`` is the HTTP client for the host agents (the
    console log), replaceable in tests."""
    agents = agents or httpx.Client(timeout=5)
    app = FastAPI(
        title="kumo",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_url=f"{API}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.router.route_class = JsonRoute
    app.state.checker = TokenChecker(service.store)
    errors.install(app)
    docs.install(app, f"{API}/docs")
    app.include_router(health_router(elector))
    app.include_router(hosts_router(service))
    app.include_router(vms_router(service, agents))
    app.include_router(migrations_router(service))
    app.include_router(resources_router(service))
    app.include_router(activity_router(service))
    app.include_router(ha_router(service))
    return app
