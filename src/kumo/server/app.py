"""The REST API (FastAPI, /api/v1, OpenAPI at /api/v1/openapi.json, Swagger UI at
/api/v1/docs). Every route but /healthz, the OpenAPI document and the docs page needs a
bearer token; a missing or wrong one gets 401 without detail.

The OpenAPI document is a contract, checked by schemathesis (tests/unit/test_api_contract.py):
each route declares every status it answers with (``errors.responses``), names and ids carry
their patterns, and every error has the shape of ``ErrorBody``."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kumo.model.activity import Event, Task
from kumo.model.common import Name
from kumo.model.host import HostRecord, Image, Network, Pool
from kumo.model.migration import MigrationOverride, MigrationSettings
from kumo.server import docs, errors
from kumo.server.auth import AGENT_SECRET, TokenChecker
from kumo.server.errors import NotFound, Unauthorized, Upstream, responses
from kumo.server.leader import LeaderElector
from kumo.server.schemas import (
    Health,
    HostMaintenance,
    HostView,
    ImageImport,
    NetworkCreate,
    PoolCreate,
    VMCreate,
    VMCreated,
    VMMigrate,
    VMPower,
    VMView,
)
from kumo.server.service import ClusterService
from kumo.store import keys

API = "/api/v1"
TASK_ID_PATTERN = r"^[0-9a-f]{12}$"
DESCRIPTION = f"""kumo's REST API: VMs, hosts, pools, networks, images, tasks and events.

Every route needs `Authorization: Bearer <token>` (the Authorize button), except `/healthz`,
this document (`{API}/openapi.json`) and this page (`{API}/docs`). The first server started
on an empty cluster prints the admin token once.

{errors.STATUS_CODES}"""


def _number(text: str) -> int | float:
    """A JSON number with a fraction or exponent, read as JSON Schema reads it: ``2.0`` is
    the integer 2 (bodies are validated strictly, so ``true`` or ``"2"`` is no integer)."""
    value = float(text)
    return int(value) if value.is_integer() else value


class _JsonRequest(Request):
    async def json(self) -> Any:
        """The body as JSON, which is UTF-8 (RFC 8259): other bytes are a 400 naming the
        body (not JSON is FastAPI's ``json_invalid``, made a 400 in ``errors``)."""
        if not hasattr(self, "_json"):
            raw = await self.body()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                detail = f"body: not UTF-8: {exc.reason} at byte {exc.start}"
                raise HTTPException(400, detail) from exc
            self._json = json.loads(text, parse_float=_number)
        return self._json


class _Route(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_JsonRequest(request.scope, request.receive))

        return route


_bearer = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer kumo_…`")


def actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Who calls: ``api:<token name>``; 401 without detail for anything else."""
    checker: TokenChecker = request.app.state.checker
    name = checker.check(credentials.credentials) if credentials else None
    if name is None:
        raise Unauthorized()
    return f"api:{name}"


Actor = Annotated[str, Depends(actor)]
VMName = Annotated[
    Name, Path(description="the VM's name", openapi_examples={"web1": {"value": "web1"}})
]
HostName = Annotated[
    Name, Path(description="the host's name", openapi_examples={"h1": {"value": "h1"}})
]
TaskId = Annotated[str, Path(pattern=TASK_ID_PATTERN, description="the task's id")]

# What each kind of route can answer besides success. Every route with a token can meet a
# wrong token (401), a bad query or header (422) and etcd down (503); a route that takes a
# body, one that is not UTF-8 JSON (400).
READ = responses(401, 422, 503)
READ_ONE = responses(401, 404, 422, 503)
CREATE = responses(400, 401, 409, 422, 503)
COMMAND = responses(400, 401, 404, 409, 422, 503)
ACT = responses(401, 404, 409, 422, 503)  # a command without a body


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
    app.router.route_class = _Route
    app.state.checker = TokenChecker(service.store)
    errors.install(app)
    docs.install(app, f"{API}/docs")

    @app.get("/healthz", responses=responses(503))
    def healthz() -> Health:
        """Open without a token: is this replica up, and which one leads."""
        return Health(
            ok=True,
            leader=elector.current() if elector else None,
            this_replica_leads=elector.is_leader if elector else False,
        )

    @app.get(f"{API}/hosts", responses=READ)
    def list_hosts(_a: Actor) -> list[HostView]:
        return service.hosts()

    @app.get(f"{API}/hosts/{{name}}", responses=READ_ONE)
    def get_host(name: HostName, _a: Actor) -> HostView:
        return service.host(name)

    @app.post(f"{API}/hosts/{{name}}/maintenance", status_code=202, responses=COMMAND)
    def host_maintenance(name: HostName, body: HostMaintenance, a: Actor) -> list[Task]:
        return service.migrations.maintenance(name, body.action, body.failback, a)

    @app.get(f"{API}/vms", responses=READ)
    def list_vms(
        _a: Actor,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        after: Annotated[str, Query(description="page after this VM name")] = "",
    ) -> list[VMView]:
        return service.vms(limit, after)

    @app.post(f"{API}/vms", status_code=201, responses=CREATE)
    def create_vm(req: VMCreate, a: Actor) -> VMCreated:
        """Place and create a VM. 409 when the cluster refuses it now: the name is taken, the
        image, pool, networks or host it names do not exist, or no host has room."""
        view, task = service.create_vm(req, a)
        return VMCreated(vm=view, task=task)

    @app.get(f"{API}/vms/{{name}}", responses=READ_ONE)
    def get_vm(name: VMName, _a: Actor) -> VMView:
        return service.vm(name)

    for action in ("start", "stop", "reboot"):
        app.post(
            f"{API}/vms/{{name}}/{action}",
            status_code=202,
            name=f"vm_{action}",
            responses=COMMAND,
        )(_power(service, action))

    @app.post(f"{API}/vms/{{name}}/migrate", status_code=202, responses=COMMAND)
    def migrate_vm(name: VMName, a: Actor, body: VMMigrate | None = None) -> Task:
        """Live-migrate (or, with ``cold``, move a stopped VM). 422 also when
        ``policy.max_downtime_ms`` is below ``policy.downtime_ms``; 409 when the policy is
        fine alone but one of them would end on the wrong side of the other over the
        cluster's and the VM's policy beneath it."""
        body = body or VMMigrate()
        return service.migrations.migrate(name, body.to, a, body.cold, body.policy)

    @app.put(f"{API}/vms/{{name}}/migration-policy", responses=COMMAND)
    def vm_migration_policy(name: VMName, body: MigrationOverride, a: Actor) -> MigrationOverride:
        """Replace the VM's policy override. 422 also when ``max_downtime_ms`` is below
        ``downtime_ms``; 409 when the override is fine alone but one of them would end on
        the wrong side of the other over the cluster's policy."""
        return service.migrations.set_vm_policy(name, body, a).migration or MigrationOverride()

    @app.get(f"{API}/migration-policy", responses=READ)
    def get_migration_policy(_a: Actor) -> MigrationSettings:
        return service.migrations.settings()

    @app.put(f"{API}/migration-policy", responses=CREATE)
    def set_migration_policy(body: MigrationSettings, a: Actor) -> MigrationSettings:
        """Replace the cluster's migration settings. 422 also when ``policy.max_downtime_ms``
        is below ``policy.downtime_ms``."""
        return service.migrations.set_settings(body, a)

    @app.post(f"{API}/tasks/{{task_id}}/cancel", status_code=202, responses=ACT)
    def cancel_task(task_id: TaskId, a: Actor) -> Task:
        return service.migrations.cancel_task(task_id, a)

    @app.delete(f"{API}/vms/{{name}}", status_code=202, responses=ACT)
    def delete_vm(name: VMName, a: Actor) -> Task:
        return service.delete(name, a)

    @app.get(
        f"{API}/vms/{{name}}/console-log",
        response_class=PlainTextResponse,
        responses={
            200: {"description": "The tail of the VM's serial console log"},
            **responses(401, 404, 422, 502, 503),
        },
    )
    def console_log(
        name: VMName,
        _a: Actor,
        bytes_: Annotated[int, Query(alias="bytes", ge=1, le=4 << 20)] = 65536,
    ) -> str:
        """Asked of the agent on the VM's host: 404 when the VM is not placed or has no log
        yet, 502 when the agent is unreachable or fails."""
        view = service.vm(name)
        if view.host is None:
            raise NotFound(f"vm {name} is not placed on a host yet", "name")
        host = service.host(view.host).record
        return _agent_console(agents, service, host, name, bytes_)

    @app.get(f"{API}/pools", responses=READ)
    def list_pools(_a: Actor) -> list[Pool]:
        return service.pools()

    @app.post(f"{API}/pools", status_code=201, responses=CREATE)
    def create_pool(req: PoolCreate, a: Actor) -> Pool:
        return service.create_pool(req, a)

    @app.get(f"{API}/networks", responses=READ)
    def list_networks(_a: Actor) -> list[Network]:
        return service.networks()

    @app.post(f"{API}/networks", status_code=201, responses=CREATE)
    def create_network(req: NetworkCreate, a: Actor) -> Network:
        return service.create_network(req, a)

    @app.get(f"{API}/images", responses=READ)
    def list_images(_a: Actor) -> list[Image]:
        return service.images()

    @app.post(f"{API}/images", status_code=201, responses=CREATE)
    def import_image(req: ImageImport, a: Actor) -> Image:
        return service.import_image(req, a)

    @app.get(f"{API}/tasks", responses=READ)
    def list_tasks(_a: Actor, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Task]:
        return service.tasks(limit)

    @app.get(f"{API}/tasks/{{task_id}}", responses=READ_ONE)
    def get_task(task_id: TaskId, _a: Actor) -> Task:
        return service.task(task_id)

    @app.get(
        f"{API}/events",
        response_model=list[Event],
        responses={
            200: {
                "description": "The last events, oldest first; with follow=true, a stream "
                "that never ends: those events, then each new one as it happens, one JSON "
                "Event a line",
                "content": {
                    "application/x-ndjson": {
                        "schema": {"type": "string"},
                        "itemSchema": {"$ref": "#/components/schemas/Event"},
                    }
                },
            },
            **READ,
        },
    )
    def events(
        _a: Actor,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        object: Annotated[str | None, Query(description="only this object's, e.g. vm/web1")] = None,
        follow: Annotated[bool, Query(description="stream new events as they happen")] = False,
    ) -> list[Event] | StreamingResponse:
        past = service.events(limit, object)
        if not follow:
            return past
        start = service.store.revision() + 1
        return StreamingResponse(
            _follow(service, past, object, start), media_type="application/x-ndjson"
        )

    return app


def _power(service: ClusterService, action: str) -> Callable[..., Task]:
    """The route of one power action: the action is fixed here, never a parameter."""

    def power(name: VMName, a: Actor, body: VMPower | None = None) -> Task:
        return service.power(name, action, body.force if body else False, a)

    power.__doc__ = {
        "start": "Start a stopped VM.",
        "stop": "Shut the VM down (ACPI); with force, power it off at once.",
        "reboot": "Reboot the VM (ACPI); with force, reset it at once.",
    }[action]
    return power


def _follow(
    service: ClusterService, past: list[Event], obj: str | None, start: int
) -> Iterator[bytes]:
    for e in past:
        yield e.model_dump_json().encode() + b"\n"
    watch = service.store.watch(keys.EVENTS, start)
    try:
        for ev in watch:
            if ev.kind != "put":
                continue
            item = Event.model_validate_json(ev.value)
            if obj is None or item.object == obj:
                yield item.model_dump_json().encode() + b"\n"
    finally:
        watch.cancel()


def _agent_console(
    agents: httpx.Client, service: ClusterService, host: HostRecord, vm: str, nbytes: int
) -> str:
    secret = service.store.get(AGENT_SECRET)
    url = f"http://{host.address}:{host.agent_port}/v1/console/{vm}"
    try:
        r = agents.get(
            url,
            params={"bytes": nbytes},
            headers={"Authorization": f"Bearer {secret.value.decode() if secret else ''}"},
        )
    except httpx.HTTPError as exc:
        raise Upstream(f"agent on {host.name} ({url}) is unreachable: {exc}", "agent") from exc
    if r.status_code == 404:
        raise NotFound(f"no console log for vm {vm} on {host.name} yet", "name")
    if r.status_code != 200:
        raise Upstream(f"agent on {host.name} answered {r.status_code}: {r.text[:200]}", "agent")
    return r.text
