"""Request and response bodies of the REST API (pydantic: validated at the edge)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kumo.model.activity import Event, Task
from kumo.model.common import Name
from kumo.model.cpu import CLUSTER_DEFAULT
from kumo.model.host import HostRecord, HostState
from kumo.model.migration import MigrationOverride
from kumo.model.vm import CPU_MODEL_PATTERN, BootDevice, Power, VMSpec, VMStatus


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _default_boot() -> list[BootDevice]:
    return ["hd"]


class VMCreate(Body):
    name: Name
    image: Name
    vcpus: int = Field(default=1, ge=1, le=256)
    cpu_model: str = Field(
        default=CLUSTER_DEFAULT,
        pattern=CPU_MODEL_PATTERN,
        description=(
            "the guest's CPU model; it runs only on hosts that can provide it. "
            f"{CLUSTER_DEFAULT!r}: the baseline of the up hosts' CPUs, fixed at creation"
        ),
    )
    memory_mib: int = Field(default=512, ge=16, le=4 * 1024 * 1024)
    disk_gib: int | None = Field(default=None, ge=1, le=65536)
    pool: Name | None = None
    clone: Literal["linked", "full"] = "linked"
    networks: list[Name] = Field(default_factory=lambda: ["public"], max_length=8)
    boot: list[BootDevice] = Field(default_factory=_default_boot, min_length=1, max_length=3)
    ssh_keys: list[str] = Field(default_factory=list, max_length=32)
    runcmd: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=32, description="cloud-init runcmd: commands run once"
    )
    host: Name | None = None
    affinity: Name | None = None
    anti_affinity: Name | None = None
    start: bool = True
    stop_timeout_s: int = Field(default=60, ge=0, le=3600)

    @field_validator("ssh_keys")
    @classmethod
    def public_keys(cls, v: list[str]) -> list[str]:
        for key in v:
            parts = key.split()
            if (
                len(parts) < 2
                or not parts[0].startswith(("ssh-", "ecdsa-", "sk-"))
                or ("\n" in key)
            ):
                raise ValueError(
                    "each must be one OpenSSH public key line, e.g. 'ssh-ed25519 AAAA… user@host'"
                )
        return v


class VMMigrate(Body):
    to: Name | None = None  # default: the scheduler picks, under the placement rules
    cold: bool = False  # move a stopped VM (its domain definition; the disk is shared)
    policy: MigrationOverride | None = None  # this migration's changes to the VM's policy


class HostMaintenance(Body):
    action: Literal["enter", "exit"]
    failback: bool = True  # exit: move the VMs that left back


class VMPower(Body):
    force: bool = False  # stop: power off at once; reboot: hard reset


class VMView(BaseModel):
    name: str
    host: str | None
    state: str
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


class HostView(BaseModel):
    name: str
    state: HostState
    maintenance: str | None = None  # draining | maintenance
    maintenance_message: str = ""
    schedulable: bool
    address: str
    cpus: int
    memory_mib: int
    vms: int
    vcpus_used: int
    memory_used_mib: int
    record: HostRecord


class PoolCreate(Body):
    name: Name
    kind: Literal["shared-dir", "local-dir"] = "shared-dir"
    path: str = Field(pattern=r"^/[^\x00]*$")


class NetworkCreate(Body):
    name: Name
    bridge: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")


class ImageImport(Body):
    name: Name
    pool: Name
    path: str = Field(description="the image file, relative to the pool's directory")
    format: Literal["qcow2", "raw"] = "qcow2"
    size_gib: int = Field(default=1, ge=1, le=65536)

    @field_validator("path")
    @classmethod
    def inside_pool(cls, v: str) -> str:
        if not v or v.startswith("/") or ".." in v.split("/") or "\x00" in v:
            raise ValueError("must be a relative path inside the pool, without '..'")
        return v


class TaskView(BaseModel):
    task: Task


class EventList(BaseModel):
    events: list[Event]
