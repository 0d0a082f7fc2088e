"""The build state machine of a network install: pure, from the signals kumo sees and `now`.

A build is one attempt to install a VM from nothing (``kumo vm create --install``); a
reinstall starts a new build with the next generation number. Its stages, in order:

    defined -> dhcp -> boot-script -> kernel -> answer-file -> installing -> callback
            -> local-boot -> ready          (and ``failed``, naming the stage that failed)

The current stage is the one in progress: the build waits in it for the signal in
``COMPLETES`` (dhcp waits for the VM's DHCP request, installing for the installer's callback,
callback for the domain to reboot or power off, local-boot for the installed system's
heartbeat or SSH port). Rules (tests/unit/test_build.py):

- a signal that completes a later stage passes every stage up to it at the signal's time
  (they are marked ``implied``: their own signal was not seen), except that nothing but an
  authenticated callback passes ``installing`` (a reboot or an open SSH port during the
  install proves nothing, and the installer's environment may run sshd);
- the kernel stage needs both the kernel and the initrd fetched, in either order;
- a signal for a stage already passed, or older than the current stage's entry, is only
  recorded (a second DHCP request after the reboot into local-boot is normal);
- each stage has a timeout from its entry (``DEFAULT_TIMEOUTS``, overridable per build);
  past it the build fails with a reason naming the stage, what it waited for and what was
  last seen; a signal later than the deadline cannot rescue the build;
- an answer file that fails to render fails the build at answer-file with the renderer's
  reason;
- the callback carries the build's one-time token: a wrong token, or a second callback,
  is refused and the build is unchanged;
- ``ready`` and ``failed`` are terminal: only a reinstall (a new build) changes them;
- the stage never moves backwards and stage entry times never decrease along the stages.

Every function returns a new build; none mutates, reads a clock or draws randomness (the
caller makes the token). Builds are frozen pydantic models, stored as JSON.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from kumo.model.common import Frozen


class Stage(StrEnum):
    DEFINED = "defined"
    DHCP = "dhcp"
    BOOT_SCRIPT = "boot-script"
    KERNEL = "kernel"
    ANSWER_FILE = "answer-file"
    INSTALLING = "installing"
    CALLBACK = "callback"
    LOCAL_BOOT = "local-boot"
    READY = "ready"
    FAILED = "failed"


class SignalKind(StrEnum):
    DOMAIN_STARTED = "domain-started"  # the agent started the domain (it boots from the network)
    DHCP = "dhcp"  # dnsmasq saw a DHCP request or gave a lease to the VM's MAC
    BOOT_SCRIPT = "boot-script"  # GET /boot/{mac}, answered with the install script
    KERNEL = "kernel"
    INITRD = "initrd"
    ANSWER_FILE = "answer-file"  # the answer file was rendered and served
    ANSWER_FILE_ERROR = "answer-file-error"  # detail: why the template failed to render
    CALLBACK = "callback"  # only through callback(): it needs the token
    DOMAIN_REBOOTED = "domain-rebooted"
    DOMAIN_POWERED_OFF = "domain-powered-off"
    HEARTBEAT = "heartbeat"  # the installed system's agent heartbeat or its SSH port open


# The stages in order; FAILED stands outside it.
ORDER: tuple[Stage, ...] = (
    Stage.DEFINED,
    Stage.DHCP,
    Stage.BOOT_SCRIPT,
    Stage.KERNEL,
    Stage.ANSWER_FILE,
    Stage.INSTALLING,
    Stage.CALLBACK,
    Stage.LOCAL_BOOT,
    Stage.READY,
)
WAITING = ORDER[:-1]  # the stages that wait for a signal and have a timeout

# The transition table: the signals that complete each waiting stage. KERNEL needs all of
# its signals (kernel and initrd); every other stage any one of them.
COMPLETES: Mapping[Stage, frozenset[SignalKind]] = {
    Stage.DEFINED: frozenset({SignalKind.DOMAIN_STARTED}),
    Stage.DHCP: frozenset({SignalKind.DHCP}),
    Stage.BOOT_SCRIPT: frozenset({SignalKind.BOOT_SCRIPT}),
    Stage.KERNEL: frozenset({SignalKind.KERNEL, SignalKind.INITRD}),
    Stage.ANSWER_FILE: frozenset({SignalKind.ANSWER_FILE}),
    Stage.INSTALLING: frozenset({SignalKind.CALLBACK}),
    Stage.CALLBACK: frozenset({SignalKind.DOMAIN_REBOOTED, SignalKind.DOMAIN_POWERED_OFF}),
    Stage.LOCAL_BOOT: frozenset({SignalKind.HEARTBEAT}),
}
NEEDS_ALL = frozenset({Stage.KERNEL})
# Only its own signal passes a stage in here (the callback is the only proof of an install).
NOT_IMPLIED = frozenset({Stage.INSTALLING})
# The stage each signal belongs to; a render failure is the answer file's.
_STAGE_OF: Mapping[SignalKind, Stage] = {
    **{k: s for s, kinds in COMPLETES.items() for k in kinds},
    SignalKind.ANSWER_FILE_ERROR: Stage.ANSWER_FILE,
}

DEFAULT_TIMEOUTS: Mapping[Stage, float] = {
    Stage.DEFINED: 120.0,  # placed, defined and started by the agent
    Stage.DHCP: 60.0,
    Stage.BOOT_SCRIPT: 30.0,
    Stage.KERNEL: 60.0,  # both files: a large initrd over a slow link takes a while
    Stage.ANSWER_FILE: 60.0,
    Stage.INSTALLING: 1800.0,
    Stage.CALLBACK: 300.0,  # callback -> the domain reboots or powers off
    Stage.LOCAL_BOOT: 300.0,  # -> heartbeat or SSH from the installed system
}

_WAITED_FOR: Mapping[Stage, str] = {
    Stage.DEFINED: "the domain did not start",
    Stage.DHCP: "no DHCP request from {mac}",
    Stage.BOOT_SCRIPT: "no request for /boot/{mac}",
    Stage.KERNEL: "no request for the kernel",  # refined by what was fetched (_waited_for)
    Stage.ANSWER_FILE: "no request for the answer file",
    Stage.INSTALLING: "no callback",
    Stage.CALLBACK: "the domain did not reboot or power off",
    Stage.LOCAL_BOOT: "no heartbeat or SSH from the installed system",
}
_SEEN_AS: Mapping[SignalKind, str] = {
    SignalKind.DOMAIN_STARTED: "domain started",
    SignalKind.DHCP: "DHCP request",
    SignalKind.BOOT_SCRIPT: "boot script fetched",
    SignalKind.KERNEL: "kernel fetched",
    SignalKind.INITRD: "initrd fetched",
    SignalKind.ANSWER_FILE: "answer file fetched",
    SignalKind.ANSWER_FILE_ERROR: "answer file failed to render",
    SignalKind.CALLBACK: "callback",
    SignalKind.DOMAIN_REBOOTED: "domain rebooted",
    SignalKind.DOMAIN_POWERED_OFF: "domain powered off",
    SignalKind.HEARTBEAT: "heartbeat",
}


class Signal(Frozen):
    """Something seen from outside: ``at`` is when it happened (epoch seconds), ``detail``
    what the source said (the lease address, the URL path, the render error)."""

    kind: SignalKind
    at: float
    detail: str = ""


class Build(Frozen):
    """One install attempt of one VM. ``entered`` holds each reached stage's entry time
    (FAILED's is the failure's); ``implied`` the stages passed without their own signal;
    ``seen`` the first time each kind of signal was seen; ``last`` the newest signal."""

    vm: str
    mac: str
    generation: int = Field(ge=1)
    token: str = Field(min_length=1, repr=False)  # in the answer file; never in logs
    timeouts: dict[Stage, float]
    stage: Stage = Stage.DEFINED
    entered: dict[Stage, float]
    implied: tuple[Stage, ...] = ()
    seen: dict[SignalKind, float] = Field(default_factory=dict)
    last: Signal | None = None
    failed_stage: Stage | None = None
    reason: str = ""


@dataclass(frozen=True)
class Accepted:
    build: Build


@dataclass(frozen=True)
class Refused:
    reason: str  # for the HTTP layer's 403


Status = Literal["done", "implied", "running", "failed", "pending"]


@dataclass(frozen=True)
class StageProgress:
    stage: Stage
    started_at: float | None
    duration: float | None  # None: still running, not reached, or ready
    status: Status


def clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S UTC")


def _seconds(t: float) -> str:
    return f"{t:g} s"


def new_build(
    vm: str,
    mac: str,
    token: str,
    now: float,
    *,
    timeouts: Mapping[Stage, float] | None = None,
    generation: int = 1,
) -> Build:
    """A build in ``defined``; ``timeouts`` overrides some of ``DEFAULT_TIMEOUTS``."""
    merged = dict(DEFAULT_TIMEOUTS)
    for stage, seconds in (timeouts or {}).items():
        if stage not in DEFAULT_TIMEOUTS:
            raise ValueError(
                f"timeouts: {str(stage)!r} has no timeout (allowed: {', '.join(WAITING)})"
            )
        if not seconds > 0:
            raise ValueError(f"timeouts.{stage}: {seconds!r} must be more than 0 s")
        merged[Stage(stage)] = float(seconds)
    if not token:
        raise ValueError("token: the callback token must not be empty")
    return Build(
        vm=vm,
        mac=mac.lower(),
        generation=generation,
        token=token,
        timeouts=merged,
        entered={Stage.DEFINED: now},
    )


def reinstall(build: Build, token: str, now: float) -> Build:
    """A new build for the same VM, whatever state the old one is in: the next
    generation, back in ``defined``, with a new token (the old one is worthless now)."""
    return new_build(
        build.vm,
        build.mac,
        token,
        now,
        timeouts=build.timeouts,
        generation=build.generation + 1,
    )


def terminal(build: Build) -> bool:
    return build.stage in (Stage.READY, Stage.FAILED)


def wants_installer(build: Build) -> bool:
    """Whether /boot/{mac} answers with the install script (else ``exit``: boot the disk).
    Until the callback: a VM that reboots mid-install starts the installer again."""
    return not terminal(build) and ORDER.index(build.stage) <= ORDER.index(Stage.INSTALLING)


def deadline(build: Build) -> float | None:
    """When the current stage times out (when the caller should call step again)."""
    if terminal(build):
        return None
    return build.entered[build.stage] + build.timeouts[build.stage]


def step(build: Build, now: float) -> Build:
    """Fail the build if its current stage is past its deadline at ``now``."""
    due = deadline(build)
    if due is None or now <= due:
        return build
    stage = build.stage
    reason = f"{stage}: {_waited_for(build)} within {_seconds(build.timeouts[stage])}"
    if build.last is not None:
        reason += f" (last seen: {_describe(build.last)})"
    return _fail(build, now, reason)


def observe(build: Build, signal: Signal) -> Build:
    """Apply a signal; callbacks go through :func:`callback`."""
    if signal.kind == SignalKind.CALLBACK:
        raise ValueError("a callback needs its token: use callback()")
    return _apply(build, signal)


def callback(build: Build, token: str, at: float, detail: str = "") -> Accepted | Refused:
    """The installer's callback: accepted once, with the build's token."""
    who = f"vm {build.vm} build {build.generation}"
    if not hmac.compare_digest(token.encode(), build.token.encode()):
        return Refused(f"{who}: wrong callback token")
    if SignalKind.CALLBACK in build.seen:
        used = clock(build.seen[SignalKind.CALLBACK])
        return Refused(f"{who}: the callback token was already used at {used}")
    if terminal(build):
        return Refused(
            f"{who} is {build.stage} already" + (f": {build.reason}" if build.reason else "")
        )
    # Authenticated, so never merely recorded as stale: it counts from the current stage on.
    at = max(at, build.entered[build.stage])
    after = step(build, at)
    if after.stage == Stage.FAILED:
        return Refused(f"{who}: too late, {after.reason}")
    return Accepted(_apply(build, Signal(kind=SignalKind.CALLBACK, at=at, detail=detail)))


def _apply(build: Build, signal: Signal) -> Build:
    build = step(build, signal.at)  # a terminal build comes back unchanged
    if terminal(build):
        return build
    recorded = _record(build, signal)
    stage = _STAGE_OF[signal.kind]
    here = ORDER.index(build.stage)
    there = ORDER.index(stage)
    if (
        signal.at < build.entered[build.stage]
        or there < here
        or any(s in NOT_IMPLIED for s in ORDER[here:there])
    ):
        return recorded  # only recorded: stale, already passed, or not provable this way
    build = _advance(recorded, stage, signal.at, implied=ORDER[here:there])
    if signal.kind == SignalKind.ANSWER_FILE_ERROR:
        return _fail(build, signal.at, f"{stage}: answer file failed to render: {signal.detail}")
    if stage in NEEDS_ALL and not COMPLETES[stage] <= build.seen.keys():
        return build
    return _advance(build, ORDER[there + 1], signal.at, implied=())


def _record(build: Build, signal: Signal) -> Build:
    first = min(build.seen.get(signal.kind, signal.at), signal.at)
    newest = build.last is None or signal.at >= build.last.at
    return build.model_copy(
        update={
            "seen": {**build.seen, signal.kind: first},
            "last": signal if newest else build.last,
        }
    )


def _advance(build: Build, to: Stage, at: float, implied: tuple[Stage, ...]) -> Build:
    """Enter ``to`` at ``at``; the stages between the current one and ``to`` are entered
    at ``at`` too. ``implied``: the stages passed without their own signal."""
    here, there = ORDER.index(build.stage), ORDER.index(to)
    entered = dict(build.entered)
    for s in ORDER[here + 1 : there + 1]:
        entered[s] = at
    return build.model_copy(
        update={"stage": to, "entered": entered, "implied": build.implied + implied}
    )


def _fail(build: Build, at: float, reason: str) -> Build:
    return build.model_copy(
        update={
            "stage": Stage.FAILED,
            "failed_stage": build.stage,
            "reason": reason,
            "entered": {**build.entered, Stage.FAILED: at},
        }
    )


def _waited_for(build: Build) -> str:
    if build.stage == Stage.KERNEL:
        if SignalKind.KERNEL in build.seen:
            return "no request for the initrd"
        if SignalKind.INITRD in build.seen:
            return "no request for the kernel"
        return "no request for the kernel or the initrd"
    return _WAITED_FOR[build.stage].format(mac=build.mac)


def _describe(signal: Signal) -> str:
    what = _SEEN_AS[signal.kind] + (f" ({signal.detail})" if signal.detail else "")
    return f"{what} at {clock(signal.at)}"


def progress(build: Build) -> tuple[StageProgress, ...]:
    """Each stage with its start, its duration once passed, and its status: for the CLI's
    ``--wait`` and ``kumo vm show``."""
    rows = []
    for i, stage in enumerate(ORDER):
        start = build.entered.get(stage)
        if start is None:
            rows.append(StageProgress(stage, None, None, "pending"))
        elif stage == build.failed_stage:
            rows.append(StageProgress(stage, start, build.entered[Stage.FAILED] - start, "failed"))
        elif stage == build.stage or stage == Stage.READY:
            rows.append(
                StageProgress(stage, start, None, "done" if stage == Stage.READY else "running")
            )
        else:
            end = build.entered[ORDER[i + 1]]
            status: Status = "implied" if stage in build.implied else "done"
            rows.append(StageProgress(stage, start, end - start, status))
    return tuple(rows)


def transition_line(before: Build, after: Build) -> str | None:
    """The one fixed-format log line for a change of stage, or None if the stage stayed."""
    name = f"vm {after.vm}: build {after.generation}"
    if after.generation != before.generation:
        return f"{name}: {before.stage} -> {after.stage} (reinstall)"
    if after.stage == before.stage:
        return None
    at = clock(after.entered[after.stage])
    if after.stage == Stage.FAILED:
        return f"{name}: {before.stage} -> failed (at={at}, reason={after.reason})"
    extra = ""
    new_implied = after.implied[len(before.implied) :]
    if new_implied:
        extra = f", implied={','.join(new_implied)}"
    kind = after.last.kind if after.last is not None else "-"
    return f"{name}: {before.stage} -> {after.stage} (at={at}, signal={kind}{extra})"
