"""The REST API (FastAPI, /api/v1, OpenAPI at /api/v1/openapi.json). Every route but
/healthz needs a bearer token; a missing or wrong one gets 401 without detail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from kumo.model.activity import Event, Task
from kumo.model.host import HostRecord, Image, Network, Pool
from kumo.model.migration import MigrationOverride, MigrationSettings
from kumo.server.auth import AGENT_SECRET, TokenChecker
from kumo.server.errors import ApiError, NotFound, Unauthorized, Upstream
from kumo.server.leader import LeaderElector
from kumo.server.schemas import (
    HostMaintenance,
    HostView,
    ImageImport,
    NetworkCreate,
    PoolCreate,
    VMCreate,
    VMMigrate,
    VMPower,
    VMView,
)
from kumo.server.service import ClusterService
from kumo.store import keys
from kumo.store.base import StoreUnavailable

API = "/api/v1"


def actor(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """Who calls: ``api:<token name>``; 401 without detail for anything else."""
    scheme, _, token = (authorization or "").partition(" ")
    checker: TokenChecker = request.app.state.checker
    name = checker.check(token) if scheme.lower() == "bearer" and token else None
    if name is None:
        raise Unauthorized()
    return f"api:{name}"


Actor = Annotated[str, Depends(actor)]


def create_app(service: ClusterService, elector: LeaderElector | None = None) -> FastAPI:
    app = FastAPI(
        title="kumo",
        version="0.1.0",
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
    )
    app.state.checker = TokenChecker(service.store)

    @app.exception_handler(ApiError)
    async def api_error(_r: Request, exc: ApiError) -> JSONResponse:
        body: dict[str, object] = {"detail": str(exc)}
        if exc.field:
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(StoreUnavailable)
    async def store_down(_r: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse(
            {
                "detail": f"{exc}; kumo changed nothing, running VMs are not affected; "
                "try again when etcd is back"
            },
            status_code=503,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"] if p not in ("body", "query", "path")]
            errors.append({"field": ".".join(loc), "message": e["msg"]})
        text = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": text, "errors": errors}, status_code=422)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {
            "ok": True,
            "leader": elector.current() if elector else None,
            "this_replica_leads": elector.is_leader if elector else False,
        }

    @app.get(f"{API}/hosts")
    def list_hosts(_a: Actor) -> list[HostView]:
        return service.hosts()

    @app.get(f"{API}/hosts/{{name}}")
    def get_host(name: str, _a: Actor) -> HostView:
        return service.host(name)

    @app.post(f"{API}/hosts/{{name}}/maintenance", status_code=202)
    def host_maintenance(name: str, body: HostMaintenance, a: Actor) -> list[Task]:
        return service.migrations.maintenance(name, body.action, body.failback, a)

    @app.get(f"{API}/vms")
    def list_vms(
        _a: Actor,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        after: Annotated[str, Query(description="page after this VM name")] = "",
    ) -> list[VMView]:
        return service.vms(limit, after)

    @app.post(f"{API}/vms", status_code=201)
    def create_vm(req: VMCreate, a: Actor) -> dict[str, object]:
        view, task = service.create_vm(req, a)
        return {"vm": view.model_dump(mode="json"), "task": task.model_dump(mode="json")}

    @app.get(f"{API}/vms/{{name}}")
    def get_vm(name: str, _a: Actor) -> VMView:
        return service.vm(name)

    for action in ("start", "stop", "reboot"):

        def handler(
            name: str, a: Actor, body: VMPower | None = None, _action: str = action
        ) -> Task:
            return service.power(name, _action, body.force if body else False, a)

        app.post(f"{API}/vms/{{name}}/{action}", status_code=202, name=f"vm_{action}")(handler)

    @app.post(f"{API}/vms/{{name}}/migrate", status_code=202)
    def migrate_vm(name: str, a: Actor, body: VMMigrate | None = None) -> Task:
        body = body or VMMigrate()
        return service.migrations.migrate(name, body.to, a, body.cold, body.policy)

    @app.put(f"{API}/vms/{{name}}/migration-policy")
    def vm_migration_policy(name: str, body: MigrationOverride, a: Actor) -> MigrationOverride:
        return service.migrations.set_vm_policy(name, body, a).migration or MigrationOverride()

    @app.get(f"{API}/migration-policy")
    def get_migration_policy(_a: Actor) -> MigrationSettings:
        return service.migrations.settings()

    @app.put(f"{API}/migration-policy")
    def set_migration_policy(body: MigrationSettings, a: Actor) -> MigrationSettings:
        return service.migrations.set_settings(body, a)

    @app.post(f"{API}/tasks/{{task_id}}/cancel", status_code=202)
    def cancel_task(task_id: str, a: Actor) -> Task:
        return service.migrations.cancel_task(task_id, a)

    @app.delete(f"{API}/vms/{{name}}", status_code=202)
    def delete_vm(name: str, a: Actor) -> Task:
        return service.delete(name, a)

    @app.get(f"{API}/vms/{{name}}/console-log", response_class=PlainTextResponse)
    def console_log(
        name: str, _a: Actor, bytes_: Annotated[int, Query(alias="bytes", ge=1, le=4 << 20)] = 65536
    ) -> str:
        view = service.vm(name)
        if view.host is None:
            raise NotFound(f"vm {name} is not placed on a host yet")
        host = service.host(view.host).record
        return _agent_console(service, host, name, bytes_)

    @app.get(f"{API}/pools")
    def list_pools(_a: Actor) -> list[Pool]:
        return service.pools()

    @app.post(f"{API}/pools", status_code=201)
    def create_pool(req: PoolCreate, a: Actor) -> Pool:
        return service.create_pool(req, a)

    @app.get(f"{API}/networks")
    def list_networks(_a: Actor) -> list[Network]:
        return service.networks()

    @app.post(f"{API}/networks", status_code=201)
    def create_network(req: NetworkCreate, a: Actor) -> Network:
        return service.create_network(req, a)

    @app.get(f"{API}/images")
    def list_images(_a: Actor) -> list[Image]:
        return service.images()

    @app.post(f"{API}/images", status_code=201)
    def import_image(req: ImageImport, a: Actor) -> Image:
        return service.import_image(req, a)

    @app.get(f"{API}/tasks")
    def list_tasks(_a: Actor, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Task]:
        return service.tasks(limit)

    @app.get(f"{API}/tasks/{{task_id}}")
    def get_task(task_id: str, _a: Actor) -> Task:
        return service.task(task_id)

    @app.get(f"{API}/events", response_model=None)
    def events(
        _a: Actor,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        object: str | None = None,
        follow: bool = False,
    ) -> list[Event] | StreamingResponse:
        past = service.events(limit, object)
        if not follow:
            return past
        start = service.store.revision() + 1

        def stream() -> Iterator[bytes]:
            for e in past:
                yield e.model_dump_json().encode() + b"\n"
            watch = service.store.watch(keys.EVENTS, start)
            try:
                for ev in watch:
                    if ev.kind != "put":
                        continue
                    item = Event.model_validate_json(ev.value)
                    if object is None or item.object == object:
                        yield item.model_dump_json().encode() + b"\n"
            finally:
                watch.cancel()

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    return app


def _agent_console(service: ClusterService, host: HostRecord, vm: str, nbytes: int) -> str:
    secret = service.store.get(AGENT_SECRET)
    url = f"http://{host.address}:{host.agent_port}/v1/console/{vm}"
    try:
        r = httpx.get(
            url,
            params={"bytes": nbytes},
            timeout=5,
            headers={"Authorization": f"Bearer {secret.value.decode() if secret else ''}"},
        )
    except httpx.HTTPError as exc:
        raise Upstream(f"agent on {host.name} ({url}) is unreachable: {exc}") from exc
    if r.status_code == 404:
        raise NotFound(f"no console log for vm {vm} on {host.name} yet")
    if r.status_code != 200:
        raise Upstream(f"agent on {host.name} answered {r.status_code}: {r.text[:200]}")
    return r.text
