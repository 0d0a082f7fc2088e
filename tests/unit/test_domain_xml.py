"""Generated domain XML: compared with a golden file, and accepted by libvirt itself."""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from kumo.hypervisor.domain import (
    DiskConfig,
    DomainConfig,
    NicConfig,
    config_digest,
    domain_xml,
    kumo_metadata,
    owned_by_kumo,
)

GOLDEN = Path(__file__).parent.parent / "golden"

CFG = DomainConfig(
    name="web1",
    uuid="6b756d6f-0000-4000-8000-000000000001",
    domain_type="qemu",
    vcpus=2,
    memory_mib=256,
    disks=(DiskConfig("/var/lib/kumo/pools/shared/vms/web1.qcow2"),),
    nics=(NicConfig("br0", "52:54:00:12:34:56"),),
    boot=("hd", "network"),
    serial_log="/var/log/libvirt/qemu/web1-serial.log",
)


def check_golden(name: str, text: str, directory: Path = GOLDEN) -> None:
    """``text`` must equal the stored file ``name``. A missing file fails like a changed one:
    it is written only when KUMO_REGENERATE_GOLDEN=1 (then review the diff and commit it)."""
    path = directory / name
    if os.environ.get("KUMO_REGENERATE_GOLDEN") == "1":
        path.write_text(text)
    how = "run the test again with KUMO_REGENERATE_GOLDEN=1, then review and commit the file"
    assert path.exists(), f"golden file {path} is missing; to write it, {how}"
    assert text == path.read_text(), f"{name} changed; to accept the change, {how}"


def test_a_missing_golden_file_fails_unless_regenerating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUMO_REGENERATE_GOLDEN", raising=False)
    with pytest.raises(
        AssertionError,
        match="missing; to write it, run the test again with KUMO_REGENERATE_GOLDEN=1",
    ):
        check_golden("new.xml", "<a/>", tmp_path)
    assert not (tmp_path / "new.xml").exists()
    monkeypatch.setenv("KUMO_REGENERATE_GOLDEN", "1")
    check_golden("new.xml", "<a/>", tmp_path)
    assert (tmp_path / "new.xml").read_text() == "<a/>"
    monkeypatch.delenv("KUMO_REGENERATE_GOLDEN")
    check_golden("new.xml", "<a/>", tmp_path)
    with pytest.raises(AssertionError, match=r"new\.xml changed; to accept the change, run"):
        check_golden("new.xml", "<b/>", tmp_path)
    assert (tmp_path / "new.xml").read_text() == "<a/>"


def test_domain_xml_golden() -> None:
    check_golden("domain-web1.xml", domain_xml(CFG))


def test_domain_xml_defines_on_libvirt_and_round_trips_ownership() -> None:
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(domain_xml(CFG))
        xml = dom.XMLDesc(0)
        assert owned_by_kumo(xml) == "web1"
        assert "52:54:00:12:34:56" in xml and "cache='none'" in xml
        dom.undefine()
    finally:
        conn.close()
    assert owned_by_kumo("<domain><name>x</name></domain>") is None


def test_digest_follows_the_generated_xml_and_survives_libvirt() -> None:
    """The drift check's input (agent/decide.py): the digest changes with the definition, not
    otherwise, and libvirt keeps it; a running domain redefined shows the new one in its
    persistent (inactive) XML, the old one live until its next boot."""
    bigger = dataclasses.replace(CFG, memory_mib=512)
    assert config_digest(CFG) == config_digest(dataclasses.replace(CFG))
    assert config_digest(bigger) != config_digest(CFG)
    assert kumo_metadata(domain_xml(CFG)) == ("web1", config_digest(CFG), False)
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(domain_xml(CFG))
        dom.create()
        conn.defineXML(domain_xml(bigger))
        inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert kumo_metadata(inactive) == ("web1", config_digest(bigger), False)
        assert kumo_metadata(dom.XMLDesc(0)) == ("web1", config_digest(CFG), False)
        dom.destroy()
        dom.undefine()
    finally:
        conn.close()
    assert kumo_metadata("<domain><name>x</name></domain>") == (None, "", False)


def test_the_ha_mark_is_in_the_metadata_and_the_digest() -> None:
    """Self-fencing reads which domains HA restarts elsewhere from libvirt alone (the store
    may be out of reach); turning HA on or off redefines the domain."""
    ha = dataclasses.replace(CFG, ha=True)
    assert kumo_metadata(domain_xml(ha)) == ("web1", config_digest(ha), True)
    assert config_digest(ha) != config_digest(CFG)
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(domain_xml(ha))
        assert kumo_metadata(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))[2] is True
        dom.undefine()
    finally:
        conn.close()


def test_a_disk_on_an_nbd_pool_is_a_network_disk_that_libvirt_accepts() -> None:
    """A pool exported over NBD: QEMU's own NBD client opens the raw disk from the server,
    with the same error policy (a NAS outage pauses the guest)."""
    nbd = DiskConfig("/pool/vms/web1.raw", format="raw", nbd=("198.18.1.10", 10809, "web1.raw"))
    cfg = dataclasses.replace(CFG, disks=(nbd,))
    xml = domain_xml(cfg)
    disk = ET.fromstring(xml).find("devices/disk")
    assert disk is not None and disk.get("type") == "network"
    driver, source = disk.find("driver"), disk.find("source")
    assert driver is not None and source is not None
    assert (driver.get("type"), driver.get("error_policy")) == ("raw", "stop")
    assert (source.get("protocol"), source.get("name")) == ("nbd", "web1.raw")
    host = source.find("host")
    assert host is not None and (host.get("name"), host.get("port")) == ("198.18.1.10", "10809")
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(xml)
        assert "protocol='nbd'" in dom.XMLDesc(0)
        dom.undefine()
    finally:
        conn.close()
