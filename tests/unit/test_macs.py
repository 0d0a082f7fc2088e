"""MAC addresses are unique in the cluster: drawn at random, claimed (a key that must not
exist) in the commit that creates the VM, drawn again on a collision, and freed with the VM.
The random source is injected, so collisions are forced, not hoped for."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence

import pytest

from kumo.model.vm import Nic, VMSpec
from kumo.server.macs import MAX_DRAWS, NoFreeMac, draw_macs, mac_of
from kumo.server.placement import MAX_TXN_OPS, PlaceRequest
from kumo.server.schemas import NetworkCreate, VMCreate
from kumo.server.service import ClusterService
from kumo.sim.cluster import define_basics, register_hosts, sim_host
from kumo.store import keys
from kumo.store.base import ClusterStore, Compare, Delete, Entry, Put
from kumo.store.cache import DirectView
from kumo.store.memory import MemoryStore
from kumo.store.records import decode
from tests.unit.test_agent import World


def bits(*first: int) -> Callable[[], int]:
    """A random source that returns ``first``, then 1000, 1001, …"""
    it = itertools.chain(first, itertools.count(1000))
    return lambda: next(it)


class RecordingStore(MemoryStore):
    """Records the size of every commit: (compares, writes)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def commit(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> int | None:
        self.sizes.append((len(compares), len(ops)))
        return super().commit(compares, ops)


def cluster(
    mac_bits: Callable[[], int],
    networks: Iterable[str] = ("public",),
    store: MemoryStore | None = None,
) -> ClusterService:
    store = store or MemoryStore()
    svc = ClusterService(store, mac_bits=mac_bits)
    define_basics(svc)
    for net in networks:
        if net != "public":
            svc.create_network(NetworkCreate(name=net, bridge=f"br-{net}"), "t")
    host = sim_host("h1", cpus=256, memory_mib=1 << 20)
    register_hosts(store, [host.model_copy(update={"networks": tuple(networks)})])
    return svc


def new_vm(name: str, networks: Iterable[str] = ("public",), mac: int = 5) -> PlaceRequest:
    """A create request as create_vm makes it, every NIC drawn with the same ``mac``."""
    nics = [{"network": n, "mac": mac_of(mac)} for n in networks]
    spec = VMSpec.model_validate(
        {
            "name": name,
            "uuid": name,
            "vcpus": 1,
            "memory_mib": 128,
            "disk_gib": 1,
            "image": "img",
            "pool": "shared",
            "nics": nics,
            "created_at": 0,
        }
    )
    return PlaceRequest(spec, [Compare(keys.VMS + name, 0)], [], "t", lambda: None, new=True)


def macs_in_store(svc: ClusterService) -> dict[str, str]:
    """MAC -> VM, as the claim keys say."""
    return {e.key[len(keys.MACS) :]: e.value.decode() for e in svc.store.range(keys.MACS)}


def macs_of_specs(svc: ClusterService) -> dict[str, str]:
    specs = [decode(VMSpec, e) for e in svc.store.range(keys.VMS)]
    pairs = [(n.mac, s.name) for s in specs for n in s.nics]
    assert len({m for m, _ in pairs}) == len(pairs), f"a MAC is shared: {pairs}"
    return dict(pairs)


def test_a_mac_is_qemus_prefix_and_24_random_bits() -> None:
    assert mac_of(0x0A0B0C) == "52:54:00:0a:0b:0c"
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac_of(0xFFFFFF))
    Nic(network="public", mac=mac_of(0x123456))  # the spec's own pattern accepts it


def test_draw_skips_taken_and_its_own_addresses() -> None:
    taken = {mac_of(1)}
    assert draw_macs(3, taken.__contains__, bits(1, 2, 2, 1, 3)) == tuple(map(mac_of, (2, 3, 1000)))


def test_draw_gives_up_when_every_address_seems_taken() -> None:
    with pytest.raises(NoFreeMac, match="no free MAC address"):
        draw_macs(1, lambda _: True, bits(*range(MAX_DRAWS)))


def test_colliding_draws_still_give_every_vm_its_own_mac() -> None:
    # a draws 7, 8; b draws 7, 8 too, then 7, 8 three times more before 1000, 1001
    svc = cluster(bits(*[7, 8] * 5), networks=("public", "storage"))
    for name in ("a", "b", "c"):
        svc.create_vm(VMCreate(name=name, image="img", networks=["public", "storage"]), "t")
    owners = macs_of_specs(svc)
    assert owners == {
        **{mac_of(7): "a", mac_of(8): "a"},
        **{mac_of(1000): "b", mac_of(1001): "b"},
        **{mac_of(1002): "c", mac_of(1003): "c"},
    }
    assert macs_in_store(svc) == owners  # each claimed, by its VM


def test_two_new_vms_in_one_group_commit_get_different_macs() -> None:
    svc = cluster(bits())
    reqs = [new_vm("b1"), new_vm("b2")]  # both drawn as mac_of(5)
    rev = svc.store.revision()
    svc.placement.place_batch(reqs)
    assert all(r.done and r.error is None for r in reqs)
    assert macs_in_store(svc) == {mac_of(5): "b1", mac_of(1000): "b2"} == macs_of_specs(svc)
    assert svc.store.revision() == rev + 1  # one transaction for both


class LaggingView(DirectView):
    """Reads that miss ``hidden`` keys until the next sync: a replica's cache that has not
    yet seen another replica's commit."""

    def __init__(self, store: ClusterStore, hidden: set[str]) -> None:
        super().__init__(store)
        self.hidden = hidden

    def sync(self, timeout: float = 2.0) -> None:
        self.hidden.clear()

    def get(self, key: str) -> Entry | None:
        return None if key in self.hidden else super().get(key)


def test_a_mac_claimed_by_another_replica_meanwhile_is_drawn_again() -> None:
    svc = cluster(bits(9))
    other = keys.MACS + mac_of(9)
    svc.store.commit([], [Put(other, b"elsewhere")])  # another replica's VM holds it
    svc.view = LaggingView(svc.store, {other})  # and this replica has not seen it yet
    view, _ = svc.create_vm(VMCreate(name="web1", image="img"), "t")
    assert [n.mac for n in view.spec.nics] == [mac_of(1000)]
    assert macs_in_store(svc) == {mac_of(9): "elsewhere", mac_of(1000): "web1"}
    assert macs_of_specs(svc) == {mac_of(1000): "web1"}  # the stored spec says so too


def test_a_group_commit_stays_within_etcds_operation_limit() -> None:
    nets = ["public", *(f"n{i}" for i in range(7))]
    store = RecordingStore()
    svc = cluster(bits(), networks=nets, store=store)
    sizes = store.sizes
    sizes.clear()
    # Requests queued while another placer waited on etcd: the next placer takes them all.
    svc.placement.queue.extend(new_vm(f"w{i}", nets) for i in range(30))
    svc.create_vm(VMCreate(name="last", image="img", networks=nets), "t")
    assert all(c <= MAX_TXN_OPS and w <= MAX_TXN_OPS for c, w in sizes), sizes
    assert len(sizes) < 10 and max(w for _, w in sizes) > 100  # still grouped
    assert len(macs_of_specs(svc)) == 31 * 8 == len(macs_in_store(svc))


def test_deleting_a_vm_frees_its_macs() -> None:
    w = World()
    svc = ClusterService(w.store, clock=w.clock, mac_bits=bits(3, 3))
    svc.create_vm(VMCreate(name="web1", image="tg", host="h1"), "t")
    assert macs_in_store(svc) == {mac_of(3): "web1"}
    w.agent.run_once()
    svc.delete("web1", "t")
    w.agent.run_once()  # the agent removes the domain and the disk, then the records
    assert w.store.range(keys.VMS) == [] and macs_in_store(svc) == {}
    svc.create_vm(VMCreate(name="web2", image="tg", host="h1"), "t")
    assert macs_in_store(svc) == {mac_of(3): "web2"}  # the same address, free again


def test_deleting_a_never_placed_vm_frees_its_macs() -> None:
    svc = cluster(bits(4))
    svc.create_vm(VMCreate(name="web1", image="img"), "t")
    svc.store.commit([], [Delete(keys.PLACEMENT + "web1")])  # e.g. its host was removed
    svc.delete("web1", "t")
    assert svc.store.range(keys.VMS) == [] and macs_in_store(svc) == {}


def test_a_vm_placed_again_keeps_its_macs() -> None:
    """A VM placed again (place_unplaced) is not new: its MACs stay as they are."""
    svc = cluster(bits(6))
    svc.create_vm(VMCreate(name="web1", image="img"), "t")
    before = macs_of_specs(svc)
    svc.store.commit([], [Delete(keys.PLACEMENT + "web1")])
    assert svc.place_unplaced("t") == ["web1"]
    assert macs_of_specs(svc) == before == macs_in_store(svc)
