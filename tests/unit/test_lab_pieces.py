"""Pure pieces of the lab: fault arguments, host configuration, guest module closure."""

from __future__ import annotations

import pytest

from kumo.lab.faults import parse_network, parse_rate
from kumo.lab.guest import module_closure
from kumo.lab.hypervisor_host import host_uuid, hosts_file, libvirtd_conf
from kumo.lab.plan import LabPlanError, Network, make_plan


@pytest.mark.parametrize("rate", ["80mbit", "1gbit", "512kbit", "10MBit", "1.5mbit"])
def test_rates_accepted(rate: str) -> None:
    assert parse_rate(rate) == rate.lower()


@pytest.mark.parametrize("rate", ["fast", "0mbit", "-1mbit", "80", "80 mbit", "80furlongs"])
def test_bad_rates_named(rate: str) -> None:
    with pytest.raises(LabPlanError, match=r"rate: .* e\.g\. 80mbit"):
        parse_rate(rate)


def test_networks() -> None:
    assert parse_network("storage") is Network.STORAGE
    with pytest.raises(LabPlanError, match="public or storage"):
        parse_network("wifi")


def test_libvirtd_listens_on_storage_network_with_distinct_uuid() -> None:
    plan = make_plan(2)
    h1, _h2 = plan.hosts
    conf = libvirtd_conf(h1)
    assert 'listen_addr = "198.18.1.11"' in conf
    assert "listen_tcp = 1" in conf and "listen_tls = 0" in conf
    assert host_uuid("h1") != host_uuid("h2")
    assert f'host_uuid = "{host_uuid("h1")}"' in conf


def test_hosts_file_names_every_node_storage_first() -> None:
    text = hosts_file(list(make_plan(2).nodes))
    assert "198.18.1.12 h2\n" in text
    assert "198.18.0.12 h2-public\n" in text
    assert "198.18.1.2 ctl\n" in text
    assert "198.18.0.1 router\n" in text


def test_module_closure_follows_dependencies() -> None:
    dep = (
        "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko "
        "kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/virtio/virtio.ko:\n"
        "kernel/fs/nls/nls_iso8859-1.ko:\n"
        "kernel/unrelated.ko:\n"
    )
    assert module_closure(dep, ("virtio_blk", "nls_iso8859_1", "builtin_thing")) == [
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/fs/nls/nls_iso8859-1.ko",
    ]
