"""Errors the API turns into HTTP answers; each message names the field or object. What the
status codes mean is ``STATUS_CODES`` (published in the OpenAPI document's description)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.routing import Match

from kumo.server.schemas import ErrorBody, ValidationErrorBody
from kumo.store.base import StoreUnavailable

STATUS_CODES = """Every error answer has one shape (`ErrorBody`: `detail`, and `field` or `errors`
naming what is at fault); a 422 (`ValidationErrorBody`) lists each field. The codes mean the
same on every route:

- 400: the body could not be read: not UTF-8, or not JSON (an empty body is a
  missing one: 422);
- 401: no token or a wrong one (nothing more is said);
- 404: the object named in the path does not exist;
- 405: the path takes other methods (the `Allow` header names them);
- 409: a valid request the cluster's current state refuses: a name already taken, a
  referenced image/pool/network/host that does not exist (yet), a VM in the wrong state, no
  host with room;
- 422: the request breaks the rules this document states, or a rule between two of its
  fields that a schema cannot express (stated in the operation's description);
- 502: an agent (or another component kumo relies on) failed or is unreachable;
- 503: etcd is unreachable; kumo changed nothing."""


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Invalid(ApiError):
    status = 422


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Unauthorized(ApiError):
    """No detail on purpose: a caller without a valid token learns nothing but which header
    to fix."""

    status = 401

    def __init__(self) -> None:
        super().__init__("unauthorized", "authorization")


class Upstream(ApiError):
    """An agent or another component the API relies on failed."""

    status = 502


_MEANING = {
    400: "The body could not be read",
    401: "No token, or a wrong one",
    404: "The object named in the path does not exist",
    409: "The cluster's current state refuses the request",
    422: "The request breaks the schema",
    502: "An agent kumo relies on failed or is unreachable",
    503: "etcd is unreachable; kumo changed nothing",
}
_REF = "#/components/schemas/"


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each error status it can answer, with its body schema.

    The content is spelled out (not ``model=``) so that a route whose success is not JSON
    (the console log) still documents JSON errors."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = ValidationErrorBody if status == 422 else ErrorBody
        out[status] = {
            "description": _MEANING[status],
            "content": {"application/json": {"schema": {"$ref": _REF + model.__name__}}},
        }
        if status == 401:
            out[status]["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}
            }
    return out


def field_of(loc: Sequence[int | str]) -> str:
    """The field a pydantic error is about: its location less the first part (where it was:
    body, query, path, header), so a field called ``path`` keeps its name; a missing body is
    ``body``."""
    if not loc:
        return "body"
    field = ".".join(str(p) for p in loc[1:])
    return field or str(loc[0])  # an unknown key "" in the body is the body's fault


def _unreadable(errors: Sequence[Any]) -> ErrorBody | None:
    """A 400 for a body that is not JSON (FastAPI reports it as a ``json_invalid``
    validation error): the body could not be read, so no rule was checked."""
    for e in errors:
        if e["type"] == "json_invalid":
            why = e.get("ctx", {}).get("error", e["msg"])
            at = f" at character {e['loc'][1]}" if len(e["loc"]) > 1 else ""
            return ErrorBody(detail=f"body: not JSON: {why}{at}", field="body")
    return None


def _invalid(detail: str, field: str) -> ValidationErrorBody:
    """The 422 of a rule the schema cannot state, in the same shape as a schema's 422."""
    message = detail.removeprefix(f"{field}: ")
    return ValidationErrorBody.model_validate(
        {"detail": detail, "errors": [{"field": field, "message": message}]}
    )


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _json(body: ErrorBody | ValidationErrorBody, status: int, **headers: str) -> JSONResponse:
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _allowed(request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    # Through the routers the app includes (FastAPI keeps them as included routers).
    for route in iter_route_contexts(request.app.router.routes):
        route_methods = route.methods
        if route_methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route_methods
    return sorted(methods)


def _publish(app: FastAPI) -> None:
    """Put the error bodies in the document's components, where ``responses`` points."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = generate()
            _, defs = models_json_schema(
                [(ErrorBody, "serialization"), (ValidationErrorBody, "serialization")],
                ref_template=_REF + "{model}",
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """Answer every error in the documented shape, and publish that shape."""
    _publish(app)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        field = exc.field
        if field is None and len(request.path_params) == 1:
            # A refusal that names no field is about the object the path names: the VM,
            # host or task whose state refuses the request.
            field = next(iter(request.path_params))
        if exc.status == 422:  # a rule between fields: the shape of the schema's 422
            return _json(_invalid(str(exc), field or "body"), 422)
        return _json(ErrorBody(detail=str(exc), field=field), exc.status, **headers)

    @app.exception_handler(StoreUnavailable)
    async def store_down(_r: Request, exc: StoreUnavailable) -> JSONResponse:
        detail = (
            f"{exc}; kumo changed nothing, running VMs are not affected; "
            "try again when etcd is back"
        )
        return _json(ErrorBody(detail=detail), 503)

    @app.exception_handler(RequestValidationError)
    async def invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        unreadable = _unreadable(exc.errors())
        if unreadable is not None:
            return _json(unreadable, 400)
        errors = [
            {"field": field_of(e["loc"]), "message": _message(e["msg"])} for e in exc.errors()
        ]
        body = ValidationErrorBody.model_validate(
            {
                "detail": "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                "errors": errors,
            }
        )
        return _json(body, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 405:
            allowed = _allowed(request)
            detail = f"{request.method} is not allowed here; allowed: {', '.join(allowed)}"
            return _json(ErrorBody(detail=detail, field="method"), 405, Allow=", ".join(allowed))
        field = {400: "body", 404: "url"}.get(exc.status_code)  # 404: no such route
        return _json(ErrorBody(detail=str(exc.detail), field=field), exc.status_code)
