"""What every router shares: the API prefix, the route class that reads bodies as strict
UTF-8 JSON, the caller's identity from its bearer token, the path parameters, and the
statuses each kind of route declares."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kumo.model.common import Name
from kumo.server.auth import TokenChecker
from kumo.server.errors import Unauthorized, responses

API = "/api/v1"
TASK_ID_PATTERN = r"^[0-9a-f]{12}$"


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


class JsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_JsonRequest(request.scope, request.receive))

        return route


def router() -> APIRouter:
    """A router whose routes read bodies with :class:`JsonRoute`."""
    return APIRouter(route_class=JsonRoute)


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
