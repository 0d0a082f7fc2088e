"""Hosts: list, show, maintenance."""

from __future__ import annotations

from fastapi import APIRouter

from kumo.model.activity import Task
from kumo.server.routes.common import API, COMMAND, READ, READ_ONE, Actor, HostName, router
from kumo.server.schemas import HostMaintenance, HostView
from kumo.server.service import ClusterService


def hosts_router(service: ClusterService) -> APIRouter:
    r = router()

    @r.get(f"{API}/hosts", responses=READ)
    def list_hosts(_a: Actor) -> list[HostView]:
        return service.hosts()

    @r.get(f"{API}/hosts/{{name}}", responses=READ_ONE)
    def get_host(name: HostName, _a: Actor) -> HostView:
        return service.host(name)

    @r.post(f"{API}/hosts/{{name}}/maintenance", status_code=202, responses=COMMAND)
    def host_maintenance(name: HostName, body: HostMaintenance, a: Actor) -> list[Task]:
        return service.migrations.maintenance(name, body.action, body.failback, a)

    return r
