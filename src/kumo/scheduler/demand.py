"""What a VM asks of a host, as the pure scheduler sees it."""

from __future__ import annotations

from dataclasses import replace

from kumo.model.cpu import CLUSTER_DEFAULT
from kumo.model.vm import VMSpec
from kumo.scheduler.placement import Demand


def demand(spec: VMSpec) -> Demand:
    """The VM's demand. Its HA policy's allowed hosts and preferred host apply wherever the
    scheduler chooses (create, place, migrate without a target); a VM pinned with ``--host``
    is placed by its pin alone (HA recovery drops the pin and uses them, ``server.ha``)."""
    pinned = spec.placement.host is not None
    return Demand(
        name=spec.name,
        vcpus=spec.vcpus,
        cpu_model="" if spec.cpu_model == CLUSTER_DEFAULT else spec.cpu_model,
        cpu_features=frozenset(spec.cpu.features) if spec.cpu else frozenset(),
        memory_mib=spec.memory_mib,
        pool=spec.pool,
        networks=frozenset(n.network for n in spec.nics),
        pin=spec.placement.host,
        affinity=spec.placement.affinity,
        anti_affinity=spec.placement.anti_affinity,
        allowed=frozenset() if pinned else frozenset(spec.ha.hosts),
        preferred=None if pinned else spec.ha.preferred,
    )


def ha_demand(spec: VMSpec) -> Demand:
    """What a VM asks of a host when HA moves or places it (recovery, network-path failover):
    the scheduler's demand, its HA hosts and preferred host, and no pin (``--host`` says
    where to create it; ``ha.hosts`` says where it may run again)."""
    return replace(
        demand(spec), pin=None, allowed=frozenset(spec.ha.hosts), preferred=spec.ha.preferred
    )
