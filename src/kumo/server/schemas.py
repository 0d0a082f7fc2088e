"""Request and response bodies of the REST API (pydantic: validated at the edge)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from kumo.model.activity import Event, Task
from kumo.model.common import Name
from kumo.model.cpu import CLUSTER_DEFAULT
from kumo.model.ha import FencedHost, HAMode, HAStatus
from kumo.model.host import Degraded, HostPaths, HostRecord, HostState
from kumo.model.migration import MigrationOverride
from kumo.model.profile import TEMPLATE_MAX
from kumo.model.vm import CPU_MODEL_PATTERN, BootDevice, Power, VMSpec, VMState, VMStatus


class Body(BaseModel):
    """A request body: unknown fields refused, and no type coerced (``false`` is not ``0``,
    ``"1"`` is not ``1``), so what the schema refuses the API refuses."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _check(pattern: str, rule: str, max_length: int) -> AfterValidator:
    """A string rule checked whole, with a message that says the rule; ``_publish`` puts the
    same pattern in the schema, so a schema-valid value is accepted."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if len(value) > max_length or not compiled.fullmatch(value):
            raise ValueError(f"must be {rule}")
        return value

    return AfterValidator(check)


def _publish(pattern: str, rule: str, max_length: int) -> WithJsonSchema:
    return WithJsonSchema(
        {"type": "string", "pattern": pattern, "maxLength": max_length, "description": rule}
    )


SSH_KEY_PATTERN = r"^(ssh-|ecdsa-|sk-)[!-~]+ [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$"
_SSH_KEY = (
    SSH_KEY_PATTERN,
    "one OpenSSH public key line: type, base64 key, an optional comment "
    "(e.g. 'ssh-ed25519 AAAA… user@host')",
    16384,
)
SshKey = Annotated[str, _check(*_SSH_KEY), _publish(*_SSH_KEY)]

_SEGMENT = r"(?:[^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+|\.)"
IMAGE_PATH_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
_IMAGE_PATH = (
    IMAGE_PATH_PATTERN,
    "a path relative to the pool's directory, inside it: no leading '/', no empty or '..' part",
    4096,
)
ImagePath = Annotated[str, _check(*_IMAGE_PATH), _publish(*_IMAGE_PATH)]


class FieldError(BaseModel):
    field: str = Field(min_length=1, description="e.g. 'name', 'networks.0', 'body', 'limit'")
    message: str


class ErrorBody(BaseModel):
    """Every error answer: what went wrong; for a bad input, the field (or fields) at fault."""

    detail: str
    field: str | None = Field(default=None, min_length=1)
    errors: list[FieldError] | None = None


class ValidationErrorBody(BaseModel):
    """A 422: the request breaks the schema; one entry for each field at fault."""

    detail: str
    errors: list[FieldError] = Field(min_length=1)


def _default_boot() -> list[BootDevice]:
    return ["hd"]


class HAPolicy(Body):
    """A VM's HA policy as the API takes it (stored as ``VMSpec.ha``). Every field has its
    default; a PUT replaces the whole policy."""

    mode: Literal["restart", "off"] = Field(
        default="restart",
        description="restart: run it again on another host when its host dies or is fenced; "
        "off: never recovered or moved by HA",
    )
    priority: int = Field(
        default=0, ge=0, le=1000, description="higher is recovered first when room is short"
    )
    hosts: list[Name] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the registered hosts it may run on (HA and the scheduler); "
        "null or absent: any host. An empty list is refused",
    )
    preferred: Name | None = Field(
        default=None,
        description="a registered host chosen when it can take the VM; 422 when `hosts` is "
        "given and does not hold it",
    )
    failback: bool = Field(
        default=False,
        description="move back to `preferred` by live migration once it is up again",
    )
    max_restart: int = Field(
        default=1, ge=0, le=10, description="failed starts retried on one host"
    )
    max_relocate: int = Field(
        default=1, ge=0, le=10, description="then moves to another host before `error`"
    )


class VMCreate(Body):
    name: Name
    image: Name
    vcpus: int = Field(default=1, ge=1, le=256)
    cpu_model: str = Field(
        default=CLUSTER_DEFAULT,
        pattern=CPU_MODEL_PATTERN,
        description=(
            "the guest's CPU model; it runs only on hosts that can provide it. "
            f"{CLUSTER_DEFAULT!r}: the baseline of the registered hosts' CPUs (those of the "
            "named host's domain type, else of most hosts' type), fixed at creation"
        ),
    )
    memory_mib: int = Field(default=512, ge=16, le=4 * 1024 * 1024)
    disk_gib: int | None = Field(default=None, ge=1, le=65536)
    pool: Name | None = None
    clone: Literal["linked", "full"] = "linked"
    networks: list[Name] = Field(default_factory=lambda: ["public"], max_length=8)
    boot: list[BootDevice] = Field(default_factory=_default_boot, min_length=1, max_length=3)
    ssh_keys: list[SshKey] = Field(default_factory=list, max_length=32)
    runcmd: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=32, description="cloud-init runcmd: commands run once"
    )
    host: Name | None = None
    affinity: Name | None = None
    anti_affinity: Name | None = None
    start: bool = True
    stop_timeout_s: int = Field(default=60, ge=0, le=3600)
    ha: HAPolicy = Field(
        default_factory=HAPolicy,
        description="the VM's HA policy (default: restart, priority 0, any host); 422 when "
        "`ha.preferred` is not in `ha.hosts`",
    )


class VMMigrate(Body):
    to: Name | None = None  # default: the scheduler picks, under the placement rules
    cold: bool = False  # move a stopped VM (its domain definition; the disk is shared)
    policy: MigrationOverride | None = None  # this migration's changes to the VM's policy


class HostMaintenance(Body):
    action: Literal["enter", "exit"]
    failback: bool = True  # exit: move the VMs that left back


class VMPower(Body):
    force: bool = False  # stop: power off at once; reboot: hard reset


# The state a VM shows: its host's last report (a VMState), or ``deleting`` / ``unknown``
# (its host is down) from the server, or before any report ``pending`` (placed) or
# ``unplaced`` (no host yet). Published as one flat enum of those values.
VMViewState = Annotated[
    VMState | Literal["pending", "unplaced"],
    WithJsonSchema(
        {
            "type": "string",
            "enum": [*(s.value for s in VMState), "pending", "unplaced"],
            "description": "the host's last report; unknown: the host is down (no live agent "
            "lease); stopped also when its host is fenced and HA is off; recovering or error: "
            "HA is running it again elsewhere, or gave up (the message says why); pending: "
            "placed, not reported yet; unplaced: no host yet",
        }
    ),
]


class VMView(BaseModel):
    name: str
    host: str | None
    state: VMViewState
    power: Power
    vcpus: int
    memory_mib: int
    disk_gib: int
    image: str
    pool: str
    networks: list[str]
    message: str
    task: str | None
    spec: VMSpec
    status: VMStatus | None


class Health(BaseModel):
    ok: bool
    leader: str | None  # the replica that runs the controllers, if any
    this_replica_leads: bool


class VMCreated(BaseModel):
    vm: VMView
    task: Task


class HostView(BaseModel):
    name: str
    state: HostState  # fenced: no live lease and known off (``fenced`` says since when, why)
    fenced: FencedHost | None = None
    maintenance: str | None = None  # draining | maintenance
    maintenance_message: str = ""
    degraded: Degraded | None = None  # a network path down while most other hosts have it
    paths: HostPaths | None = None  # its public and storage paths, as its agent reports them
    schedulable: bool
    address: str
    cpus: int
    memory_mib: int
    vms: int
    vcpus_used: int
    memory_used_mib: int
    record: HostRecord


def _address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


Address = Annotated[
    str,
    AfterValidator(_address),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}],
            "description": "an IPv4 or IPv6 address",
        }
    ),
]
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CIDR_PATTERN = rf"^({_OCTET}\.){{3}}{_OCTET}/(3[0-2]|[12]?[0-9])$"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
NBD_PATTERN = rf"^({_OCTET}\.){{3}}{_OCTET}:{_PORT}$"


class PoolCreate(Body):
    name: Name
    kind: Literal["shared-dir", "local-dir"] = "shared-dir"
    path: str = Field(pattern=r"^/[^\x00]*$")
    # the NAS's addresses on the storage network: every host pings them (its storage path)
    nas: list[Address] = Field(default_factory=list, max_length=8)
    nbd: str | None = Field(
        default=None,
        pattern=NBD_PATTERN,
        description=(
            "ADDRESS:PORT of an NBD server exporting the files of the pool's vms/ directory "
            "by name (e.g. nbdkit file dir=…): disks become raw full copies that QEMU opens "
            "over the network (shared-dir pools only)"
        ),
    )

    @field_validator("nbd")
    @classmethod
    def _nbd_shared(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("kind") != "shared-dir":
            raise ValueError("only a shared-dir pool can be exported over NBD")
        return value


class NetworkCreate(Body):
    name: Name
    bridge: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    cidr: str | None = Field(
        default=None,
        pattern=CIDR_PATTERN,
        description="the IPv4 subnet, e.g. 198.18.0.0/24 (host bits are dropped)",
    )
    gateway: Address | None = Field(
        default=None,
        description="the router, inside `cidr` (which it needs): every host pings it",
    )

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not a subnet like 198.18.0.0/24") from None

    @field_validator("gateway")
    @classmethod
    def _gateway_inside(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        cidr = info.data.get("cidr")
        if cidr is None:
            raise ValueError("a gateway needs the network's cidr (and must be inside it)")
        if ipaddress.ip_address(value) not in ipaddress.ip_network(cidr):
            raise ValueError(f"{value} is outside the network's cidr {cidr}")
        return value


class ImageImport(Body):
    name: Name
    pool: Name
    path: ImagePath  # the image file, relative to the pool's directory
    format: Literal["qcow2", "raw"] = "qcow2"
    size_gib: int = Field(default=1, ge=1, le=65536)


BootSource = Annotated[
    str,
    Field(
        max_length=2048,
        pattern=r"^(https?://[!-.0-~]+(/[!-~]*)?|[a-z]([a-z0-9-]{0,61}[a-z0-9])?)$",
        description="an http(s) URL on the site's network, or an image in kumo's image store",
    ),
]


_VARIABLE = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class ProfileCreate(Body):
    name: Name
    kind: Literal["kickstart", "preseed", "autoinstall"]
    kernel: BootSource
    initrd: BootSource
    answer_template: str = Field(
        min_length=1,
        max_length=TEMPLATE_MAX,
        description="the answer file's Jinja2 template (rendered per VM, checked for its kind)",
    )
    args: list[Annotated[str, Field(pattern=r"^[!-~]{1,512}$")]] = Field(
        default_factory=list, max_length=64, description="the kernel's extra arguments"
    )
    variables: dict[
        Annotated[str, Field(pattern=_VARIABLE)],
        Annotated[str, Field(max_length=4096)],
    ] = Field(
        default_factory=dict,
        max_length=64,
        description="given to the template; names: a letter or _, then letters, digits, _",
    )


class TaskView(BaseModel):
    task: Task


class EventList(BaseModel):
    events: list[Event]


class HostFence(Body):
    confirm: Literal[True] = Field(
        description="must be true: you confirm the host is off (powered off, or cut from "
        "its disks), so its HA VMs may run elsewhere"
    )
    force: bool = Field(
        default=False,
        description="fence it although its agent's lease is still live (renewed within the "
        "TTL): the lease is revoked, so the agent, if it runs after all, stops its HA VMs; "
        "until it does they may run twice",
    )


class HASettingsChange(Body):
    """The HA timings an operator may change (a PUT replaces them all). The agents' lease TTL
    is shown by GET but not changed here: it is fixed when they start."""

    grace_s: float = Field(
        default=2.0, ge=0, le=600, description="after a host's lease expired, before fencing it"
    )
    stabilisation_s: float = Field(
        default=60.0, ge=0, le=86_400, description="a host up this long gets its failback VMs"
    )
    path_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="each host pings its router and NAS this often"
    )
    path_misses: int = Field(
        default=3, ge=1, le=100, description="unanswered pings in a row before a path is down"
    )
    path_up_s: float = Field(
        default=5.0, ge=0, le=3600, description="answers this long before a path is up again"
    )


class HAHostView(BaseModel):
    name: str
    state: HostState
    lease: bool  # its agent holds a live lease
    fenced: FencedHost | None
    vms: list[str]  # the VMs placed on it


class HAVMView(BaseModel):
    name: str
    mode: HAMode
    priority: int
    host: str | None
    state: VMViewState
    message: str
    recovery: HAStatus | None  # the HA manager's record, while it recovers the VM


class HAStatusView(BaseModel):
    hosts: list[HAHostView]
    vms: list[HAVMView]


class PlannedRestart(BaseModel):
    vm: str
    priority: int
    was_on: str
    to: str


class PlannedWait(BaseModel):
    vm: str
    priority: int
    was_on: str
    reason: str


class HAPlan(BaseModel):
    failed: list[str]  # the hosts taken as dead
    restart: list[PlannedRestart]  # in recovery order
    waits: list[PlannedWait]  # could not be placed now, with the scheduler's reason
    not_recovered: list[str]  # VMs on those hosts that HA leaves alone (off, stopped, deleting)
