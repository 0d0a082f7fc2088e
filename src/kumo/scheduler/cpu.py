"""The guest CPU a VM gets when it names no model (ADR 0007), as pure functions: which host
CPUs a domain type's baseline is computed from, whether that baseline is stale, and which
baseline a new VM gets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from kumo.model.cpu import CLUSTER_DEFAULT, ClusterCPU, CPUDef
from kumo.model.host import HostRecord

BaselineInputs = tuple[tuple[str, CPUDef], ...]
DOMAIN_TYPES = ("kvm", "qemu")  # in order of preference when as many hosts have each


def baseline_inputs(hosts: Mapping[str, HostRecord], domain_type: str) -> BaselineInputs:
    """The CPUs of every registered host of ``domain_type`` that reported one, by host name.
    Up or not: a host's record persists while its lease may lapse for a moment, and a VM
    created meanwhile must still run there. A host whose record is deleted leaves."""
    return tuple(
        (name, rec.cpu)
        for name, rec in sorted(hosts.items())
        if rec.domain_type == domain_type and rec.cpu
    )


def digest(inputs: BaselineInputs) -> str:
    """A fingerprint of the baseline's inputs: hosts and their CPUs."""
    text = json.dumps([[name, cpu.model_dump()] for name, cpu in inputs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stale(current: ClusterCPU | None, inputs: BaselineInputs) -> bool:
    """Whether the recorded baseline must be computed again for these inputs."""
    return bool(inputs) and (current is None or current.inputs != digest(inputs))


def default_baseline(
    baselines: Mapping[str, ClusterCPU], hosts: Mapping[str, HostRecord], named: str | None
) -> ClusterCPU | None:
    """The baseline a new VM that names no model gets: that of the domain type of the host
    it names, else of the type most hosts that reported a CPU have (kvm on a tie). Hosts of
    the other type run it only where they offer its features (the cpu-model filter)."""
    if named is not None and named in hosts:
        return baselines.get(hosts[named].domain_type)
    counts = {
        t: sum(1 for r in hosts.values() if r.domain_type == t and r.cpu) for t in DOMAIN_TYPES
    }
    most = max(DOMAIN_TYPES, key=lambda t: counts[t])
    return baselines.get(most) if counts[most] else None


def vm_cpu(requested: str, cluster: ClusterCPU | None) -> CPUDef | None:
    """The CPU fixed in a new VM's spec: the cluster's baseline now, when the VM names no
    model and there is one; None otherwise (a named model, or nothing known: host-model)."""
    return cluster.cpu if requested == CLUSTER_DEFAULT and cluster is not None else None
