"""Placement on a real etcd: a group commit of new VMs, each with its MAC claims, fits etcd's
limit of operations a transaction (which etcd does enforce), and two VMs never share a MAC."""

from __future__ import annotations

import itertools
import time

import pytest

from kumo.model.vm import VMSpec
from kumo.server.placement import MAX_TXN_OPS, PlaceRequest
from kumo.server.schemas import NetworkCreate, VMCreate
from kumo.server.service import ClusterService
from kumo.sim.cluster import define_basics, register_hosts, sim_host
from kumo.store import keys
from kumo.store.base import Compare, Put, StoreUnavailable
from kumo.store.etcd import EtcdStore
from kumo.store.records import decode


def test_etcd_refuses_a_transaction_over_the_limit(etcd_endpoint: str) -> None:
    store = EtcdStore(etcd_endpoint)
    prefix = f"/contract/txn-limit-{time.time_ns()}/"
    try:
        assert store.commit([], [Put(f"{prefix}{i}", b"x") for i in range(MAX_TXN_OPS)])
        # etcd answers 400 (too many operations in txn request)
        with pytest.raises(StoreUnavailable, match="Bad Request"):
            store.commit([], [Put(f"{prefix}{i}", b"y") for i in range(MAX_TXN_OPS + 1)])
    finally:
        store.close()


def test_a_group_of_eight_nic_vms_commits_on_etcd(etcd_endpoint: str) -> None:
    store = EtcdStore(etcd_endpoint)
    # every other draw is the same address: collisions within a VM, a group and the store
    draws = itertools.chain.from_iterable((0x424242, i) for i in itertools.count(1))
    svc = ClusterService(store, mac_bits=lambda: next(draws))
    run = f"r{time.time_ns() % 10**9}"  # this session's etcd may hold other runs' objects
    nets = [f"{run}-n{i}" for i in range(8)]
    try:
        define_basics(svc, image=f"{run}-img")
        for n in nets:
            svc.create_network(NetworkCreate(name=n, bridge=f"br{n[-1]}"), "t")
        host = sim_host(f"{run}-h", cpus=512, memory_mib=1 << 22)
        register_hosts(store, [host.model_copy(update={"networks": tuple(nets)})])
        template = svc.create_vm(
            VMCreate(name=f"{run}-first", image=f"{run}-img", networks=nets, host=host.name), "t"
        )[0].spec
        for i in range(25):  # queued while another placer waited: one placer takes them
            spec = template.model_copy(update={"name": f"{run}-q{i}"})
            svc.placement.queue.append(
                PlaceRequest(spec, [Compare(keys.VMS + spec.name, 0)], [], "t", lambda: None, True)
            )
        svc.create_vm(
            VMCreate(name=f"{run}-last", image=f"{run}-img", networks=nets, host=host.name), "t"
        )
        specs = [
            decode(VMSpec, e) for e in store.range(keys.VMS) if e.key.startswith(keys.VMS + run)
        ]
        assert len(specs) == 27
        macs = [n.mac for s in specs for n in s.nics]
        assert len(macs) == len(set(macs)) == 27 * 8
        claimed = {e.key[len(keys.MACS) :]: e.value.decode() for e in store.range(keys.MACS)}
        assert all(claimed[n.mac] == s.name for s in specs for n in s.nics)
    finally:
        store.close()
