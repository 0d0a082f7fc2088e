"""``/healthz``: open without a token."""

from __future__ import annotations

from fastapi import APIRouter

from kumo.server.errors import responses
from kumo.server.leader import LeaderElector
from kumo.server.routes.common import router
from kumo.server.schemas import Health


def health_router(elector: LeaderElector | None) -> APIRouter:
    r = router()

    @r.get("/healthz", responses=responses(503))
    def healthz() -> Health:
        """Open without a token: is this replica up, and which one leads."""
        return Health(
            ok=True,
            leader=elector.current() if elector else None,
            this_replica_leads=elector.is_leader if elector else False,
        )

    return r
