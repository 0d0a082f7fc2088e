"""High availability: a VM's HA policy, a fenced host, a VM waiting to be recovered, and the
cluster's HA timings. The rules are in docs/adr/0008-high-availability.md."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from kumo.model.common import Frozen, Name


class HAMode(StrEnum):
    RESTART = "restart"  # run it again elsewhere when its host dies (or is fenced)
    OFF = "off"  # never recovered or moved by HA; it stays down with its host


class HASpec(Frozen):
    """A VM's HA policy (``VMSpec.ha``)."""

    mode: HAMode = HAMode.RESTART
    priority: int = Field(default=0, ge=0, le=1000)  # higher recovered first when capacity is short
    hosts: tuple[Name, ...] = ()  # the hosts it may run on (HA and the scheduler); empty: any
    preferred: Name | None = None  # chosen when it can take the VM
    failback: bool = False  # back to ``preferred`` by live migration once it is up again
    max_restart: int = Field(default=1, ge=0, le=10)  # failed starts retried on one host
    max_relocate: int = Field(default=1, ge=0, le=10)  # then moves to another host

    @model_validator(mode="before")
    @classmethod
    def _before_ha(cls, data: Any) -> Any:
        """Records written before HA existed held ``{"enabled": false, "priority": 0}``, a
        reservation nothing read: they get today's defaults."""
        if isinstance(data, dict) and "enabled" in data:
            return {k: v for k, v in data.items() if k != "enabled"}
        return data


class FencedHost(Frozen):
    """``/kumo/fenced/<host>``: the host is known not to run anything (its lease expired and
    the grace passed, or an operator or fence device confirmed it off). Its mod revision is
    the fencing token of every recovery of its VMs: a recovery commits only while it holds.
    Removed by the leader once the host holds a lease again."""

    host: Name
    at: float  # when it was fenced (wall clock)
    reason: str  # "lease expired at ... (+2 s grace)" or "confirmed by api:admin"
    lease_expired_at: float | None = None  # when the leader saw the alive key gone
    by: str  # the actor: "controller:ha" or the operator


class FrozenHost(Frozen):
    """``/kumo/frozen/<host>``: the host is going down cleanly (a reboot), Proxmox's "freeze"
    shutdown policy: its agent shut its VMs down and wrote this while it held its lease. HA
    neither fences the host nor recovers its VMs; they run there again when it is back. Its
    agent removes it when it registers again; an operator who knows the host will not come
    back fences it (`kumo host fence H --confirm`): the fence wins and its VMs are recovered."""

    host: Name
    reason: str
    since: float  # wall clock


class RecoveryState(StrEnum):
    RECOVERING = "recovering"  # fits nowhere now; retried every pass
    ERROR = "error"  # start failures used up max_restart and max_relocate


class HAStatus(Frozen):
    """``/kumo/ha/<vm>``: the HA manager's word on a VM it is recovering (absent otherwise)."""

    vm: Name
    state: RecoveryState
    reason: str
    since: float
    failed_host: Name  # the host it was on when HA took over
    restarts_here: int = 0  # failed starts on its current host after the first
    relocations: int = 0  # moves made for failed starts
    tried: tuple[Name, ...] = ()  # hosts where it failed to start


class HASettings(Frozen):
    """``/kumo/config/ha``: the cluster's HA timings (defaults as the issue gives them)."""

    model_config = ConfigDict(strict=True)

    lease_ttl_s: int = Field(default=5, ge=2, le=120)  # the agents' lease
    grace_s: float = Field(default=2.0, ge=0, le=600)  # after the lease expired, before fencing
    stabilisation_s: float = Field(default=60.0, ge=0, le=86_400)  # before failback
    # network paths (agent/paths.py): each target pinged every ``path_interval_s``; a path is
    # down after ``path_misses`` unanswered pings in a row, up again after ``path_up_s`` of
    # answers (dampening: a link flapping faster moves nothing twice)
    path_interval_s: float = Field(default=1.0, gt=0, le=60)
    path_misses: int = Field(default=3, ge=1, le=100)
    path_up_s: float = Field(default=5.0, ge=0, le=3600)
