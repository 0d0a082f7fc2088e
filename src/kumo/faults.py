"""The fault vocabulary: what can go wrong in a cluster (and what an operator does about it),
as typed values shared by the simulator (``kumo.sim.World.apply``), the scenario files'
``do:`` strings (/work/shared/SCENARIOS.md, ``parse_fault``) and ``kumo lab fault``
(``from_lab``, which keeps the lab's own syntax).

Pure: no clock, no process, no I/O. A fault names its hosts and VMs; whoever applies it
decides what that means (the simulator flips state, the lab kills processes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

Net = Literal["public", "storage"]
NETS: tuple[Net, ...] = ("public", "storage")


class FaultError(ValueError):
    """A fault that cannot be parsed; the message names what is allowed."""


@dataclass(frozen=True)
class PowerOff:
    host: str  # every process dies at once: power pulled (the lab's kill-host)


@dataclass(frozen=True)
class PowerOn:
    host: str


@dataclass(frozen=True)
class Reboot:
    host: str  # a clean reboot: VMs frozen, not recovered


@dataclass(frozen=True)
class Link:
    host: str
    net: Net
    up: bool  # the lab's `cut` is a link going down


@dataclass(frozen=True)
class Partition:
    host: str  # cut from the control plane (etcd) only; links stay up


@dataclass(frozen=True)
class Heal:
    host: str  # undo every fault of the host: links, partition, rates, power


@dataclass(frozen=True)
class Router:
    up: bool  # the public network's router, seen by every host


@dataclass(frozen=True)
class Nas:
    up: bool  # the shared storage, seen by every host


@dataclass(frozen=True)
class KillAgent:
    host: str


@dataclass(frozen=True)
class RestartAgent:
    host: str


@dataclass(frozen=True)
class KillLibvirtd:
    host: str  # QEMU goes on


@dataclass(frozen=True)
class RestartLibvirtd:
    host: str


@dataclass(frozen=True)
class VmCrash:
    vm: str  # the domain dies on its own


@dataclass(frozen=True)
class StartFails:
    vm: str
    host: str
    times: int  # the next `times` starts of the VM on the host fail


@dataclass(frozen=True)
class MigrateFails:
    vm: str  # its next live migration fails


@dataclass(frozen=True)
class Maintenance:
    host: str
    enter: bool


@dataclass(frozen=True)
class VmMigrate:
    vm: str
    target: str


@dataclass(frozen=True)
class VmPower:
    vm: str
    action: Literal["start", "stop", "delete"]


@dataclass(frozen=True)
class VmHa:
    vm: str
    mode: Literal["restart", "off"]


@dataclass(frozen=True)
class LeaderCrash:
    pass  # the controller leader dies; a standby takes over


@dataclass(frozen=True)
class StoreDown:
    pass  # etcd unreachable for everyone


@dataclass(frozen=True)
class StoreUp:
    pass


@dataclass(frozen=True)
class Fence:
    host: str  # an operator or fence device confirms the host is off (trusted)


@dataclass(frozen=True)
class PauseAgent:
    host: str  # the agent stops answering (SIGSTOP)


@dataclass(frozen=True)
class ResumeAgent:
    host: str


@dataclass(frozen=True)
class Slow:
    host: str
    net: Net
    mbit: float  # the link's rate in Mbit/s


Fault = (
    PowerOff
    | PowerOn
    | Reboot
    | Link
    | Partition
    | Heal
    | Router
    | Nas
    | KillAgent
    | RestartAgent
    | KillLibvirtd
    | RestartLibvirtd
    | VmCrash
    | StartFails
    | MigrateFails
    | Maintenance
    | VmMigrate
    | VmPower
    | VmHa
    | LeaderCrash
    | StoreDown
    | StoreUp
    | Fence
    | PauseAgent
    | ResumeAgent
    | Slow
)


# -- the scenario files' `do:` strings ------------------------------------------------------


def _net(value: str) -> Net:
    for net in NETS:
        if value == net:
            return net
    raise FaultError(f"network: {value!r} is not a lab network; use public or storage")


def _updown(value: str) -> bool:
    if value not in ("up", "down"):
        raise FaultError(f"{value!r} is not up or down")
    return value == "up"


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise FaultError(f"count: {value!r} is not a positive whole number")
    return int(value)


def _mbit(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        rate = 0.0
    if not rate > 0:
        raise FaultError(f"rate: {value!r} is not a positive number of Mbit/s")
    return rate


def _choice(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise FaultError(f"{value!r}: use {' or '.join(allowed)}")
    return value


def _vm_command(a: list[str]) -> Fault:
    if a[0] == "migrate":
        return VmMigrate(a[1], a[2])
    if a[0] == "ha":
        return VmHa(a[1], "restart" if _choice(a[2], ("restart", "off")) == "restart" else "off")
    action = _choice(a[0], ("start", "stop", "delete"))
    return VmPower(a[1], "start" if action == "start" else "stop" if action == "stop" else "delete")


# usage -> how to build the fault from the words after the first; the usage's word count
# (less one) is the number of arguments, except for `vm`, whose usages are listed apart.
_GRAMMAR: dict[str, tuple[tuple[str, ...], Callable[[list[str]], Fault]]] = {
    "power-off": (("power-off HOST",), lambda a: PowerOff(a[0])),
    "power-on": (("power-on HOST",), lambda a: PowerOn(a[0])),
    "reboot": (("reboot HOST",), lambda a: Reboot(a[0])),
    "link": (
        ("link HOST public|storage up|down",),
        lambda a: Link(a[0], _net(a[1]), _updown(a[2])),
    ),
    "partition": (("partition HOST",), lambda a: Partition(a[0])),
    "heal": (("heal HOST",), lambda a: Heal(a[0])),
    "router": (("router up|down",), lambda a: Router(_updown(a[0]))),
    "nas": (("nas up|down",), lambda a: Nas(_updown(a[0]))),
    "kill-agent": (("kill-agent HOST",), lambda a: KillAgent(a[0])),
    "restart-agent": (("restart-agent HOST",), lambda a: RestartAgent(a[0])),
    "kill-libvirtd": (("kill-libvirtd HOST",), lambda a: KillLibvirtd(a[0])),
    "restart-libvirtd": (("restart-libvirtd HOST",), lambda a: RestartLibvirtd(a[0])),
    "vm-crash": (("vm-crash VM",), lambda a: VmCrash(a[0])),
    "start-fails": (("start-fails VM HOST N",), lambda a: StartFails(a[0], a[1], _count(a[2]))),
    "migrate-fails": (("migrate-fails VM",), lambda a: MigrateFails(a[0])),
    "maintenance": (
        ("maintenance enter|exit HOST",),
        lambda a: Maintenance(a[1], _choice(a[0], ("enter", "exit")) == "enter"),
    ),
    "vm": (
        ("vm migrate VM HOST", "vm start|stop|delete VM", "vm ha VM restart|off"),
        _vm_command,
    ),
    "leader-crash": (("leader-crash",), lambda a: LeaderCrash()),
    "store": (("store up|down",), lambda a: StoreUp() if _updown(a[0]) else StoreDown()),
    "fence": (("fence HOST",), lambda a: Fence(a[0])),
    "pause-agent": (("pause-agent HOST",), lambda a: PauseAgent(a[0])),
    "resume-agent": (("resume-agent HOST",), lambda a: ResumeAgent(a[0])),
    "slow": (("slow HOST public|storage MBIT",), lambda a: Slow(a[0], _net(a[1]), _mbit(a[2]))),
}

USAGES: tuple[str, ...] = tuple(u for usages, _ in _GRAMMAR.values() for u in usages)


def _arity(words: list[str], usages: tuple[str, ...]) -> bool:
    if words[0] == "vm":  # `vm migrate` takes 3 arguments, `vm ha` 3, the others 2
        wanted = 4 if len(words) > 1 and words[1] in ("migrate", "ha") else 3
        return len(words) == wanted
    return len(words) == len(usages[0].split())


def parse_fault(text: str) -> Fault:
    """A scenario's ``do:`` string as a :class:`Fault`, e.g. ``power-off h1`` ->
    ``PowerOff("h1")``. :class:`FaultError` names what is allowed."""
    words = text.split()
    if not words or words[0] not in _GRAMMAR:
        known = "; ".join(USAGES)
        raise FaultError(f"do: {text!r} is not a fault; allowed: {known}")
    usages, build = _GRAMMAR[words[0]]
    if not _arity(words, usages):
        raise FaultError(f"do: {text!r}: expected {' or '.join(f'`{u}`' for u in usages)}")
    try:
        return build(words[1:])
    except FaultError as exc:
        raise FaultError(f"do: {text!r}: {exc}") from None


def describe(fault: Fault) -> str:
    """The fault in the ``do:`` syntax (``parse_fault(describe(f)) == f``)."""
    match fault:
        case Link(host, net, up):
            return f"link {host} {net} {'up' if up else 'down'}"
        case Router(up) | Nas(up):
            return f"{type(fault).__name__.lower()} {'up' if up else 'down'}"
        case StartFails(vm, host, times):
            return f"start-fails {vm} {host} {times}"
        case Maintenance(host, enter):
            return f"maintenance {'enter' if enter else 'exit'} {host}"
        case VmMigrate(vm, target):
            return f"vm migrate {vm} {target}"
        case VmPower(vm, action):
            return f"vm {action} {vm}"
        case VmHa(vm, mode):
            return f"vm ha {vm} {mode}"
        case StoreDown():
            return "store down"
        case StoreUp():
            return "store up"
        case LeaderCrash():
            return "leader-crash"
        case Slow(host, net, mbit):
            return f"slow {host} {net} {mbit:g}"
    word = re.sub(r"(?<!^)(?=[A-Z])", "-", type(fault).__name__).lower()
    return " ".join([word, *(str(getattr(fault, f.name)) for f in fields(fault))])


# -- `kumo lab fault`: its own syntax, the same faults --------------------------------------

LAB_USAGE = {
    "kill-host": "kill-host HOST",
    "kill-libvirtd": "kill-libvirtd HOST",
    "kill-agent": "kill-agent HOST",
    "cut": "cut HOST public|storage",
    "partition": "partition HOST",
    "slow": "slow HOST public|storage RATE",
    "router-down": "router-down",
    "router-up": "router-up",
    "nas-down": "nas-down",
    "nas-up": "nas-up",
    "kill-etcd": "kill-etcd",
    "kill-leader": "kill-leader",
    "heal": "heal NODE",
}
# Faults of the whole cluster: no argument, each a fault of the vocabulary as it stands.
_LAB_CLUSTER: dict[str, Fault] = {
    "router-down": Router(up=False),
    "router-up": Router(up=True),
    "nas-down": Nas(up=False),
    "nas-up": Nas(up=True),
    "kill-etcd": StoreDown(),
    "kill-leader": LeaderCrash(),
}
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
_MBIT = {  # tc units: "bit" is bits per second, "bps" bytes per second
    "bit": 1e-6,
    "kbit": 1e-3,
    "mbit": 1.0,
    "gbit": 1e3,
    "bps": 8e-6,
    "kbps": 8e-3,
    "mbps": 8.0,
    "gbps": 8e3,
}


def tc_rate_mbit(value: str) -> float:
    """A tc rate such as ``80mbit`` in Mbit/s (units: bit, kbit, mbit, gbit, bps, kbps,
    mbps, gbps; the ``bps`` ones are bytes)."""
    m = _RATE.fullmatch(value.strip().lower())
    if not m or float(m.group(1)) <= 0:
        raise FaultError(
            f"rate: {value!r} is not a rate; use a positive number with a tc unit, e.g. 80mbit"
        )
    return float(m.group(1)) * _MBIT[m.group(2)]


def from_lab(kind: str, args: list[str]) -> Fault:
    """``kumo lab fault KIND ARGS…`` as a :class:`Fault`: kill-host is a power-off, cut a
    link going down, router-down/up and nas-down/up the router and NAS faults, kill-etcd the
    store down, kill-leader the leader's crash; the rest keep their names. ``heal NODE``
    names any lab node (a host, ``router``, ``nas1``, ``ctl``): the lab checks the name.
    Messages as the lab has always given them."""
    if kind not in LAB_USAGE:
        raise FaultError(f"fault: unknown fault {kind!r}; known: {', '.join(LAB_USAGE)}")
    usage = LAB_USAGE[kind]
    if len(args) != len(usage.split()) - 1:
        raise FaultError(f"fault {kind}: expected `{usage}`")
    if kind in _LAB_CLUSTER:
        return _LAB_CLUSTER[kind]
    host = args[0]
    if kind == "kill-host":
        return PowerOff(host)
    if kind == "kill-libvirtd":
        return KillLibvirtd(host)
    if kind == "kill-agent":
        return KillAgent(host)
    if kind == "cut":
        return Link(host, _net(args[1]), up=False)
    if kind == "partition":
        return Partition(host)
    if kind == "slow":
        return Slow(host, _net(args[1]), tc_rate_mbit(args[2]))
    return Heal(host)
