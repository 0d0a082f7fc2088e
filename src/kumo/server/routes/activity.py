"""Tasks and events: list and show tasks; the event log, or a stream of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from kumo.model.activity import Event, Task
from kumo.server.routes.common import API, READ, READ_ONE, Actor, TaskId, router
from kumo.server.service import ClusterService
from kumo.store import keys


def activity_router(service: ClusterService) -> APIRouter:
    r = router()

    @r.get(f"{API}/tasks", responses=READ)
    def list_tasks(_a: Actor, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Task]:
        return service.tasks(limit)

    @r.get(f"{API}/tasks/{{task_id}}", responses=READ_ONE)
    def get_task(task_id: TaskId, _a: Actor) -> Task:
        return service.task(task_id)

    @r.get(
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

    return r


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
