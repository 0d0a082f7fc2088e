"""The hypervisor interface the agent uses: about a dozen methods, implemented on libvirt
(libvirt_hv.py) and by a fake (fake.py) that obeys the same contract tests
(tests/contract/test_hypervisor_contract.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from kumo.hypervisor.domain import DomainConfig
from kumo.model.activity import MigrationProgress
from kumo.model.cpu import CPUDef
from kumo.model.migration import Strategy


class HypervisorError(Exception):
    """libvirtd or QEMU refused or failed; the message says which host and what."""


class DomainState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    OTHER = "other"


class PauseReason(StrEnum):
    """Why a paused domain is paused (libvirt's ``VIR_DOMAIN_PAUSED_*`` reasons): the agent
    resumes only those QEMU paused on an I/O error (``error_policy='stop'``), never a guest
    paused by a migration, a snapshot or an operator."""

    IOERROR = "ioerror"  # a disk read or write failed (the NAS out of reach)
    USER = "user"
    MIGRATION = "migration"  # paused for the switch-over, or by post-copy
    POSTCOPY_FAILED = "postcopy-failed"
    SAVE = "save"
    DUMP = "dump"
    SNAPSHOT = "snapshot"
    WATCHDOG = "watchdog"
    CRASHED = "crashed"  # a guest panic
    STARTING_UP = "starting-up"
    SHUTTING_DOWN = "shutting-down"
    PM_SUSPENDED = "pm-suspended"  # the guest suspended itself (S3/S4)
    OTHER = "other"


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str
    state: DomainState
    kumo_vm: str | None  # the kumo VM it belongs to, from its metadata; None: not ours
    # config_digest of the persistent definition (its metadata; "" when it has none): the
    # agent redefines a domain whose digest is not the one it would define now
    digest: str = ""
    ha: bool = False  # its metadata says HA restarts it elsewhere (self-fencing destroys it)
    paused_reason: PauseReason | None = None  # why, when ``state`` is PAUSED; else None


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    cpus: int
    memory_mib: int
    libvirt_version: str
    qemu_version: str
    postcopy: bool = False  # QEMU can use userfaultfd here (post-copy migration)
    cpu_models: tuple[str, ...] = ()  # guest CPU models usable here; () = not known
    host_cpu: CPUDef | None = None  # libvirt's host-model CPU, features expanded; None: unknown
    cpu_error: str = ""  # why host_cpu is None: libvirt's error


@dataclass(frozen=True)
class MigrationTarget:
    """Where to migrate: the target's libvirt URI (control) and the URI QEMU streams to."""

    host: str
    libvirt_uri: str
    migrate_uri: str
    # The disk is host-local: "inc" copies its top layer (the target has the image below),
    # "full" all of it. The target's disk file exists already (made by the target's agent).
    copy_storage: Literal["", "inc", "full"] = ""
    disk: str = "vda"


@dataclass(frozen=True)
class Directive:
    """What the migration's watcher asks after a progress sample."""

    downtime_ms: int | None = None  # set a new downtime target
    abort: str | None = None  # abort the job, with this reason
    postcopy: bool = False  # switch to post-copy now


class MigrationCancelled(HypervisorError):
    """The migration was aborted (on request, or at its timeout); the VM runs on at the
    source. The message is the watcher's reason."""


class Hypervisor(Protocol):
    def facts(self) -> HostFacts: ...

    def baseline_cpu(self, cpus: Sequence[CPUDef]) -> CPUDef:
        """The most capable CPU that every one of ``cpus`` (host-model CPUs) runs and this
        host's hypervisor can provide: libvirt's baseline, migratable features only, with its
        features expanded. :class:`HypervisorError` when libvirt cannot compute it."""
        ...

    def domains(self) -> list[Domain]: ...

    def define(self, config: DomainConfig) -> None:
        """Define (or redefine) a persistent domain."""
        ...

    def start(self, name: str) -> None: ...

    def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI); returns at once."""
        ...

    def destroy(self, name: str) -> None:
        """Power off now (no-op when not running)."""
        ...

    def reboot(self, name: str) -> None:
        """Ask the guest to reboot (ACPI); returns at once."""
        ...

    def reset(self, name: str) -> None:
        """Hard reset, like the reset button."""
        ...

    def resume(self, name: str) -> None:
        """Let a paused domain run again; :class:`HypervisorError` when it is not paused."""
        ...

    def undefine(self, name: str) -> None: ...

    def dirty_rate(self, name: str, seconds: int = 1) -> float | None:
        """The guest's dirty rate in MiB/s, measured now over ``seconds``; None when this
        hypervisor cannot measure it."""
        ...

    def start_dirty_rate(self, name: str, seconds: int = 1) -> None:
        """Start measuring the dirty rate in the background (returns at once)."""
        ...

    def last_dirty_rate(self, name: str) -> float | None:
        """The result of the last finished measurement, if any."""
        ...

    def migrate(
        self,
        name: str,
        target: MigrationTarget,
        strategy: Strategy,
        watch: Callable[[MigrationProgress], Directive],
    ) -> MigrationProgress:
        """Live-migrate ``name`` to ``target`` (peer to peer, persistent there, undefined
        here) as ``strategy`` says, calling ``watch`` with progress about twice a second and
        doing what it returns. When a migration job of ``name`` already runs (started before
        an agent restart), watch that one instead of starting another. Returns the final
        statistics; raises :class:`MigrationCancelled` or :class:`HypervisorError`, and then
        the VM still runs here."""
        ...

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(domain name)`` whenever a domain changes state."""
        ...

    def close(self) -> None: ...
