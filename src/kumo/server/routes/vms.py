"""VMs: list, create, show, power, delete, and the console log (asked of the host's agent)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import httpx
from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from kumo.model.activity import Task
from kumo.model.host import HostRecord
from kumo.server.auth import AGENT_SECRET
from kumo.server.errors import NotFound, Upstream, responses
from kumo.server.routes.common import (
    ACT,
    API,
    COMMAND,
    CREATE,
    READ,
    READ_ONE,
    Actor,
    VMName,
    router,
)
from kumo.server.schemas import VMCreate, VMCreated, VMPower, VMView
from kumo.server.service import ClusterService


def vms_router(service: ClusterService, agents: httpx.Client) -> APIRouter:
    """The VM routes; ``agents`` is the HTTP client for the host agents (the console log)."""
    r = router()

    @r.get(f"{API}/vms", responses=READ)
    def list_vms(
        _a: Actor,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        after: Annotated[str, Query(description="page after this VM name")] = "",
    ) -> list[VMView]:
        return service.vms(limit, after)

    @r.post(f"{API}/vms", status_code=201, responses=CREATE)
    def create_vm(req: VMCreate, a: Actor) -> VMCreated:
        """Place and create a VM. 409 when the cluster refuses it now: the name is taken, the
        image, pool, networks or host it names do not exist, or no host has room."""
        view, task = service.create_vm(req, a)
        return VMCreated(vm=view, task=task)

    @r.get(f"{API}/vms/{{name}}", responses=READ_ONE)
    def get_vm(name: VMName, _a: Actor) -> VMView:
        return service.vm(name)

    for action in ("start", "stop", "reboot"):
        r.post(
            f"{API}/vms/{{name}}/{action}",
            status_code=202,
            name=f"vm_{action}",
            responses=COMMAND,
        )(_power(service, action))

    @r.delete(f"{API}/vms/{{name}}", status_code=202, responses=ACT)
    def delete_vm(name: VMName, a: Actor) -> Task:
        return service.delete(name, a)

    @r.get(
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

    return r


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
