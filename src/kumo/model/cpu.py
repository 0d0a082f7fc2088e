"""Guest CPUs (ADR 0007): what each host's hypervisor can provide, and the cluster's default
for guests, libvirt's baseline of the registered hosts' CPUs, one per domain type."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kumo.model.common import Frozen, Name

# What a VM asks for when it names no CPU model: the cluster's baseline, fixed at creation.
CLUSTER_DEFAULT = "cluster-default"


class CPUDef(Frozen):
    """A CPU as libvirt describes it: a named model with the features required and disabled
    beyond the model's own. ``features`` is every feature it has (libvirt expanded the model),
    so that the scheduler compares CPUs without libvirt's CPU map."""

    arch: str = "x86_64"
    model: str = Field(min_length=1, max_length=64)
    vendor: str | None = None
    require: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    features: tuple[str, ...] = ()  # sorted; migratable features only


class ClusterCPU(Frozen):
    """The guest CPU every registered host of one domain type can run: libvirt's baseline
    (migratable features) of their host-model CPUs, computed by the agent of one of them
    through its libvirtd. Whether a host is up does not matter: its record persists."""

    domain_type: Literal["kvm", "qemu"]
    cpu: CPUDef
    hosts: tuple[Name, ...]  # the hosts of that type whose CPUs it was computed from
    inputs: str  # digest of those hosts' CPUs: recomputed only when it changes
    computed_by: Name
    at: float
