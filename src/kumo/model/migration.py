"""How kumo live-migrates: the policy (a cluster default, overridden per VM and per
migration), the cluster's concurrency limits, and the strategy the source agent picks from
the policy and what it measured before starting (agent/strategy.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from kumo.model.common import Frozen

Auto = Literal["auto", "on", "off"]


class MigrationPolicy(Frozen):
    model_config = ConfigDict(strict=True)  # API bodies: no coercion (false is not 0)

    bandwidth_mib_s: int = Field(default=0, ge=0, le=100_000)  # 0: as fast as the link goes
    downtime_ms: int = Field(default=300, ge=10, le=60_000)  # the target switch-over pause
    max_downtime_ms: int = Field(default=2000, ge=10, le=60_000)  # raised in steps up to this
    auto_converge: bool = True  # throttle the guest's vCPUs when pre-copy does not converge
    xbzrle: Auto = "auto"  # delta-encode re-sent pages: on when the guest dirties memory
    compression: Auto = "auto"  # compress pages: on when the link is slow (< 1 Gbit/s)
    parallel: int = Field(default=0, ge=0, le=16)  # multifd connections; 0: one stream
    postcopy: Literal["auto", "off"] = "auto"  # when both hosts support it
    timeout_s_per_gib: int = Field(default=120, ge=5, le=86_400)  # then abort (never pause)
    min_timeout_s: int = Field(default=60, ge=5, le=86_400)


class MigrationOverride(Frozen):
    """Fields of a :class:`MigrationPolicy` to change; None keeps the one beneath."""

    model_config = ConfigDict(strict=True)  # API bodies: no coercion (false is not 0)

    bandwidth_mib_s: int | None = Field(default=None, ge=0, le=100_000)
    downtime_ms: int | None = Field(default=None, ge=10, le=60_000)
    max_downtime_ms: int | None = Field(default=None, ge=10, le=60_000)
    auto_converge: bool | None = None
    xbzrle: Auto | None = None
    compression: Auto | None = None
    parallel: int | None = Field(default=None, ge=0, le=16)
    postcopy: Literal["auto", "off"] | None = None
    timeout_s_per_gib: int | None = Field(default=None, ge=5, le=86_400)
    min_timeout_s: int | None = Field(default=None, ge=5, le=86_400)


def effective(policy: MigrationPolicy, *overrides: MigrationOverride | None) -> MigrationPolicy:
    for o in overrides:
        if o is not None:
            policy = policy.model_copy(update=o.model_dump(exclude_none=True))
    return policy


class MigrationSettings(Frozen):
    """The cluster's migration settings (``/kumo/config/migration``)."""

    model_config = ConfigDict(strict=True)  # API bodies: no coercion (false is not 0)

    policy: MigrationPolicy = MigrationPolicy()
    max_per_host: int = Field(default=2, ge=1, le=64)  # a migration counts on both hosts
    max_total: int = Field(default=8, ge=1, le=1024)


class Strategy(Frozen):
    """What the source agent chose, and why; kept in the task's final record."""

    name: str  # "pre-copy", "pre-copy+xbzrle+throttle", "post-copy", ...
    reason: str
    dirty_rate_mib_s: float | None = None
    link_mib_s: float | None = None
    auto_converge: bool = True
    throttle_initial: int = 20  # % of vCPU time taken when throttling starts
    throttle_increment: int = 10
    xbzrle: bool = False
    xbzrle_cache_mib: int = 0
    compression: bool = False
    parallel: int = 0
    postcopy: bool = False
    bandwidth_mib_s: int = 0
    downtime_ms: int = 300
    max_downtime_ms: int = 2000
    timeout_s: float = 60.0
