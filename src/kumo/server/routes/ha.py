"""High availability: a VM's HA policy, an operator's fence, HA's view of the cluster, its
recovery plan and its timings (docs/control-plane.md, "High availability")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from kumo.model.common import NAME_MAX_LENGTH
from kumo.model.ha import FencedHost, HASettings, HASpec
from kumo.server.errors import responses
from kumo.server.routes.common import (
    API,
    COMMAND,
    CREATE,
    READ,
    Actor,
    HostName,
    VMName,
    router,
)
from kumo.server.schemas import HAPlan, HAPolicy, HASettingsChange, HAStatusView, HostFence
from kumo.server.service import ClusterService

_NAME = r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
HOST_LIST_PATTERN = rf"^{_NAME}(,{_NAME})*$"

FailHosts = Annotated[
    str | None,
    Query(
        pattern=HOST_LIST_PATTERN,
        max_length=64 * (NAME_MAX_LENGTH + 1),
        description="comma-separated host names to take as dead (default: every host that "
        "is down or fenced now); 409 naming `fail` for a host that is not registered",
        openapi_examples={"h1": {"value": "h1"}},
    ),
]


def ha_router(service: ClusterService) -> APIRouter:
    r = router()

    @r.put(f"{API}/vms/{{name}}/ha", responses=COMMAND)
    def vm_ha(name: VMName, body: HAPolicy, a: Actor) -> HASpec:
        """Replace the VM's HA policy (fields left out take their defaults). 422 also when
        ``preferred`` is not in ``hosts``; 409 naming ``hosts`` or ``preferred`` for a host
        that is not registered. It applies from the next placement or recovery: the VM is
        not moved now."""
        return service.commands.set_ha(name, body, a)

    @r.post(f"{API}/hosts/{{name}}/fence", responses=COMMAND)
    def host_fence(name: HostName, body: HostFence, a: Actor) -> FencedHost:
        """Confirm that the host is off: it is fenced at once (no grace) and HA runs its HA
        VMs elsewhere. 409 while its agent's lease is live, unless ``force``. A fenced host
        answers its record and nothing changes."""
        return service.commands.fence_host(name, a, body.force)

    @r.get(f"{API}/ha/status", responses=READ)
    def ha_status(_a: Actor) -> HAStatusView:
        """Every host (lease, fence, VMs) and every HA VM with its state and HA's reason."""
        return service.queries.ha_status()

    @r.get(f"{API}/ha/plan", responses=responses(401, 409, 422, 503))
    def ha_plan(_a: Actor, fail: FailHosts = None) -> HAPlan:
        """Where each HA VM of the ``fail`` hosts would run again if they died now, and which
        could not be placed and why. Reads only."""
        return service.queries.ha_plan(fail.split(",") if fail else None)

    @r.get(f"{API}/ha/settings", responses=READ)
    def get_ha_settings(_a: Actor) -> HASettings:
        return service.queries.ha_settings()

    @r.put(f"{API}/ha/settings", responses=CREATE)
    def set_ha_settings(body: HASettingsChange, a: Actor) -> HASettings:
        """Replace the grace, the stabilisation period and the path monitor's timings. The
        agents' lease TTL is shown, not changed here: it is fixed when they start."""
        return service.commands.set_ha_settings(body, a)

    return r
