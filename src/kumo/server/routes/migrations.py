"""Migrations: migrate a VM, its policy override, the cluster's migration settings, and
cancelling a migration's task (the only tasks that can be cancelled)."""

from __future__ import annotations

from fastapi import APIRouter

from kumo.model.activity import Task
from kumo.model.migration import MigrationOverride, MigrationSettings
from kumo.server.routes.common import (
    ACT,
    API,
    COMMAND,
    CREATE,
    READ,
    Actor,
    TaskId,
    VMName,
    router,
)
from kumo.server.schemas import VMMigrate
from kumo.server.service import ClusterService


def migrations_router(service: ClusterService) -> APIRouter:
    r = router()

    @r.post(f"{API}/vms/{{name}}/migrate", status_code=202, responses=COMMAND)
    def migrate_vm(name: VMName, a: Actor, body: VMMigrate | None = None) -> Task:
        """Live-migrate (or, with ``cold``, move a stopped VM). 422 also when
        ``policy.max_downtime_ms`` is below ``policy.downtime_ms``; 409 when the policy is
        fine alone but one of them would end on the wrong side of the other over the
        cluster's and the VM's policy beneath it."""
        body = body or VMMigrate()
        return service.migrations.migrate(name, body.to, a, body.cold, body.policy)

    @r.put(f"{API}/vms/{{name}}/migration-policy", responses=COMMAND)
    def vm_migration_policy(name: VMName, body: MigrationOverride, a: Actor) -> MigrationOverride:
        """Replace the VM's policy override. 422 also when ``max_downtime_ms`` is below
        ``downtime_ms``; 409 when the override is fine alone but one of them would end on
        the wrong side of the other over the cluster's policy."""
        return service.migrations.set_vm_policy(name, body, a).migration or MigrationOverride()

    @r.get(f"{API}/migration-policy", responses=READ)
    def get_migration_policy(_a: Actor) -> MigrationSettings:
        return service.migrations.settings()

    @r.put(f"{API}/migration-policy", responses=CREATE)
    def set_migration_policy(body: MigrationSettings, a: Actor) -> MigrationSettings:
        """Replace the cluster's migration settings. 422 also when ``policy.max_downtime_ms``
        is below ``policy.downtime_ms``."""
        return service.migrations.set_settings(body, a)

    @r.post(f"{API}/tasks/{{task_id}}/cancel", status_code=202, responses=ACT)
    def cancel_task(task_id: TaskId, a: Actor) -> Task:
        return service.migrations.cancel_task(task_id, a)

    return r
