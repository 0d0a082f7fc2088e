"""What the agent does for one VM placed on its host: pure, from the spec, what libvirt
shows and the clock. The agent carries the actions out and reports the resulting state.

Rules (tests/unit/test_agent_decide.py):
- deleting: force off, undefine, remove the disk, then forget the VM (in that order);
- the disk and the persistent domain are made before anything else;
- a domain whose definition drifted (its recorded config digest is not the one of the config
  the agent would define now) is defined again; a running guest gets it at its next boot;
- desired running: start a domain that is off or crashed; reboot when the spec's reboot
  generation is ahead of the last one done (ACPI, or a hard reset when asked); but an HA VM
  whose start failed under its current placement (``start_held``) is not started again:
  the leader decides whether it is retried here (it writes the placement again), moved, or
  left in ``error`` (kumo.server.ha);
- desired stopped: ACPI shutdown once, then force off after ``stop_timeout_s``; a forced
  stop (``stop_mode`` force) powers off at once;
- a domain QEMU paused on a disk I/O error (``error_policy='stop'``: the NAS out of reach)
  whose VM should run is resumed once the host's storage path is up again after the pause
  (oVirt's auto-resume); while the path is down, or not yet seen down, it stays paused,
  reported as such; an error the NAS's pings never show is retried every
  ``RESUME_UNWATCHED_S``. With no NAS
  address to ping (the path unknown) the agent cannot see storage come back: it resumes after
  ``RESUME_UNWATCHED_S`` (a guest whose storage is still gone pauses again at its next disk
  access and loses nothing), and so at most that often;
- any other paused domain is left alone (a migration, a snapshot or an operator paused it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from kumo.hypervisor.base import Domain, DomainState, PauseReason
from kumo.model.host import PathState
from kumo.model.vm import Power, VMSpec, VMState

RESUME_UNWATCHED_S = 10.0  # paused on I/O error, no NAS to ping: resumed after this long


class Action(StrEnum):
    CREATE_DISK = "create-disk"
    DEFINE = "define"
    START = "start"
    SHUTDOWN = "shutdown"
    DESTROY = "destroy"
    REBOOT = "reboot"
    RESET = "reset"
    RESUME = "resume"
    UNDEFINE = "undefine"
    DELETE_DISK = "delete-disk"
    FORGET = "forget"


@dataclass(frozen=True)
class Observed:
    domain: Domain | None
    disk_exists: bool
    reboot_done: int  # the reboot generation last carried out
    stop_since: float | None  # when we asked the guest to shut down, if we did
    # config_digest of the definition the agent would make now; None: not compared
    want_digest: str | None = None
    # an HA VM whose start failed under its current placement: the leader's turn to decide
    start_held: bool = False
    storage: PathState = PathState.UNKNOWN  # the host's storage path, as the agent judges it
    storage_since: float = 0.0  # since when (wall clock) the path is in that state
    # when the agent first saw the domain paused on an I/O error (since its last resume)
    io_paused_since: float | None = None


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    message: str = ""


def decide(spec: VMSpec, seen: Observed, now: float) -> Decision:
    dom = seen.domain
    state = dom.state if dom else DomainState.SHUTOFF
    if spec.deleting:
        acts = []
        if dom and state != DomainState.SHUTOFF:
            acts.append(Action.DESTROY)
        if dom:
            acts.append(Action.UNDEFINE)
        if seen.disk_exists:
            acts.append(Action.DELETE_DISK)
        acts.append(Action.FORGET)
        return Decision(tuple(acts))

    acts = []
    if not seen.disk_exists:
        acts.append(Action.CREATE_DISK)
    drift = ""
    if dom is None:
        acts.append(Action.DEFINE)
    elif seen.want_digest is not None and dom.digest != seen.want_digest:
        acts.append(Action.DEFINE)
        drift = "its definition drifted from the spec: defined again" + (
            " (the running guest gets it at its next boot)" if state == DomainState.RUNNING else ""
        )
    power = _power(spec, seen, state, now)
    message = "; ".join(m for m in (drift, power.message) if m)
    return Decision((*acts, *power.actions), message)


def _power(spec: VMSpec, seen: Observed, state: DomainState, now: float) -> Decision:
    """What the spec's power state asks of a domain in ``state``."""
    if spec.power == Power.RUNNING:
        if state in (DomainState.SHUTOFF, DomainState.CRASHED):
            if seen.start_held:
                return Decision(())
            if state == DomainState.CRASHED:
                return Decision(
                    (Action.START,),
                    "the guest crashed (its QEMU ended unexpectedly): started again",
                )
            return Decision((Action.START,))
        if state == DomainState.RUNNING and spec.reboot_generation > seen.reboot_done:
            return Decision((Action.RESET if spec.reboot_mode == "reset" else Action.REBOOT,))
        reason = seen.domain.paused_reason if seen.domain else None
        if state == DomainState.PAUSED and reason == PauseReason.IOERROR:
            return _io_paused(seen, now)
        return Decision(())

    if state in (DomainState.RUNNING, DomainState.OTHER):
        if spec.stop_mode == "force":
            return Decision(
                (Action.DESTROY,), "powered off at once (forced stop), no ACPI shutdown"
            )
        if seen.stop_since is None:
            return Decision((Action.SHUTDOWN,))
        if now - seen.stop_since >= spec.stop_timeout_s:
            return Decision(
                (Action.DESTROY,),
                f"the guest ignored the ACPI shutdown for {spec.stop_timeout_s} s: forced off",
            )
    return Decision(())


def _io_paused(seen: Observed, now: float) -> Decision:
    """A domain QEMU paused on a disk I/O error, whose VM should run."""
    since = seen.io_paused_since if seen.io_paused_since is not None else now
    at = datetime.fromtimestamp(since, UTC).strftime("%H:%M:%S UTC")
    if seen.storage == PathState.DOWN:
        return Decision((), "paused: storage I/O error, waiting for the NAS")
    if seen.storage == PathState.UP and seen.storage_since >= since:
        return Decision(
            (Action.RESUME,),
            f"resumed after the storage path came back (paused on I/O error at {at})",
        )
    if seen.storage == PathState.UP:
        # The pings have not seen the outage (yet: a path is down only after some missed
        # pings). Resuming now would pause again at the next write; wait for the path to
        # go down and up, or, if the NAS answers pings all along, retry at a slow pace.
        if now - since < RESUME_UNWATCHED_S:
            return Decision((), "paused: storage I/O error, waiting for the NAS")
        return Decision(
            (Action.RESUME,),
            f"resumed {RESUME_UNWATCHED_S:g} s after a storage I/O error (paused at {at}) "
            "the NAS's pings never stopped answering",
        )
    if now - since < RESUME_UNWATCHED_S:
        return Decision(
            (),
            "paused: storage I/O error; no NAS address to ping, "
            f"resumed {RESUME_UNWATCHED_S:g} s after the pause",
        )
    return Decision(
        (Action.RESUME,),
        f"resumed {RESUME_UNWATCHED_S:g} s after a storage I/O error (paused at {at}; "
        "no NAS address to ping tells when the storage is back)",
    )


def report(spec: VMSpec, dom: Domain | None, stop_pending: bool) -> VMState:
    """The state to report once the actions are done."""
    if spec.deleting:
        return VMState.DELETING
    if dom is None:
        return VMState.DEFINING
    if dom.state == DomainState.RUNNING:
        return VMState.STOPPING if stop_pending and spec.power == Power.STOPPED else VMState.RUNNING
    return {
        DomainState.PAUSED: VMState.PAUSED,
        DomainState.CRASHED: VMState.CRASHED,
        DomainState.SHUTOFF: VMState.STOPPED,
    }.get(dom.state, VMState.ERROR)
