"""The guest CPU a VM gets when it names no model (ADR 0007), as pure functions: which host
CPUs the cluster's baseline is computed from, and whether that baseline is stale."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping

from kumo.model.cpu import CLUSTER_DEFAULT, ClusterCPU, CPUDef
from kumo.model.host import HostRecord

BaselineInputs = tuple[tuple[str, CPUDef], ...]


def baseline_inputs(hosts: Mapping[str, HostRecord], alive: Collection[str]) -> BaselineInputs:
    """The CPUs of the up hosts that reported one, by host name."""
    return tuple(
        (name, rec.cpu) for name, rec in sorted(hosts.items()) if name in alive and rec.cpu
    )


def digest(inputs: BaselineInputs) -> str:
    """A fingerprint of the baseline's inputs: hosts and their CPUs."""
    text = json.dumps([[name, cpu.model_dump()] for name, cpu in inputs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stale(current: ClusterCPU | None, inputs: BaselineInputs) -> bool:
    """Whether the recorded baseline must be computed again for these inputs."""
    return bool(inputs) and (current is None or current.inputs != digest(inputs))


def vm_cpu(requested: str, cluster: ClusterCPU | None) -> CPUDef | None:
    """The CPU fixed in a new VM's spec: the cluster's baseline now, when the VM names no
    model and there is one; None otherwise (a named model, or nothing known: host-model)."""
    return cluster.cpu if requested == CLUSTER_DEFAULT and cluster is not None else None
