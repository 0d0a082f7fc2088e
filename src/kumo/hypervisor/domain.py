"""libvirt domain XML from typed objects, in a stable element order (golden-tested in
tests/unit/test_domain_xml.py and defined on libvirt's test:///default driver)."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

KUMO_XMLNS = "https://kumo.dev/xmlns/libvirt/1"
ET.register_namespace("kumo", KUMO_XMLNS)


@dataclass(frozen=True)
class DiskConfig:
    path: str
    format: Literal["qcow2", "raw"] = "qcow2"
    target: str = "vda"
    device: Literal["disk", "cdrom"] = "disk"
    bus: Literal["virtio", "sata", "ide"] = "virtio"
    # cache=none: O_DIRECT, consistent for other hosts (shared pools) and safe for migration
    cache: Literal["none", "writeback"] = "none"
    readonly: bool = False
    # (address, port, export): QEMU opens the disk over NBD from that server (a pool's
    # ``nbd``); ``path`` stays the file on the pool's mounted directory, for kumo's tools
    nbd: tuple[str, int, str] | None = None

    @property
    def error_policy(self) -> str | None:
        """``stop`` for a writable disk: on a read or write error (the NAS is out of reach)
        QEMU pauses the guest instead of handing it the error, which a guest file system
        answers by going read-only; the agent resumes it once the storage path is back
        (agent/decide.py). A read-only disk (the seed) keeps QEMU's default."""
        return None if self.readonly else "stop"


@dataclass(frozen=True)
class NicConfig:
    bridge: str
    mac: str
    model: str = "virtio"


@dataclass(frozen=True)
class CPUConfig:
    """The guest's CPU: a named model with features required and disabled beyond the model's
    own, or, with no model, libvirt's host-model (this host's CPU as the hypervisor can give
    it: safe to migrate only between identical hosts). ADR 0007."""

    model: str | None = None
    require: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()


@dataclass(frozen=True)
class DomainConfig:
    name: str
    uuid: str
    domain_type: Literal["kvm", "qemu"]
    vcpus: int
    memory_mib: int
    disks: tuple[DiskConfig, ...]
    nics: tuple[NicConfig, ...]
    boot: tuple[str, ...] = ("hd",)
    serial_log: str | None = None
    # The agent passes the VM's: a named model, or the cluster's baseline (ADR 0007).
    cpu: CPUConfig = CPUConfig()
    owner: str = "kumo"  # recorded in <metadata>: which domains kumo manages
    # recorded in <metadata> as ha="restart": HA may run it elsewhere if this host is cut off,
    # so the host destroys it itself first (self-fencing needs no store to know which)
    ha: bool = False


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def domain_xml(cfg: DomainConfig) -> str:
    """The definition; its kumo metadata carries :func:`config_digest` of ``cfg``."""
    return _render(cfg, config_digest(cfg))


def config_digest(cfg: DomainConfig) -> str:
    """A stable digest of the XML kumo generates for ``cfg`` (less the digest itself): the
    agent redefines a domain whose recorded digest differs from the one it would define."""
    return "sha256:" + hashlib.sha256(_render(cfg, "").encode()).hexdigest()[:32]


def _render(cfg: DomainConfig, digest: str) -> str:
    dom = ET.Element("domain", {"type": cfg.domain_type})
    _sub(dom, "name", cfg.name)
    _sub(dom, "uuid", cfg.uuid)
    meta = _sub(dom, "metadata")
    owner = (
        {"name": cfg.name, "owner": cfg.owner}
        | ({"ha": "restart"} if cfg.ha else {})
        | ({"digest": digest} if digest else {})
    )
    _sub(meta, f"{{{KUMO_XMLNS}}}vm", **owner)
    _sub(dom, "memory", str(cfg.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(cfg.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    for dev in cfg.boot:
        _sub(os_el, "boot", dev=dev)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _cpu(dom, cfg.cpu)
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    for d in cfg.disks:
        disk = _sub(devices, "disk", type="network" if d.nbd else "file", device=d.device)
        policy = {"error_policy": d.error_policy} if d.error_policy else {}
        _sub(disk, "driver", name="qemu", type=d.format, cache=d.cache, **policy)
        if d.nbd is None:
            _sub(disk, "source", file=d.path)
        else:
            address, port, export = d.nbd
            source = _sub(disk, "source", protocol="nbd", name=export)
            _sub(source, "host", name=address, port=str(port))
        _sub(disk, "target", dev=d.target, bus=d.bus)
        if d.readonly:
            _sub(disk, "readonly")
    for n in cfg.nics:
        nic = _sub(devices, "interface", type="bridge")
        _sub(nic, "mac", address=n.mac)
        _sub(nic, "source", bridge=n.bridge)
        _sub(nic, "model", type=n.model)
    serial = _sub(devices, "serial", type="pty")
    if cfg.serial_log:
        _sub(serial, "log", file=cfg.serial_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    ET.indent(dom, space="  ")
    return ET.tostring(dom, encoding="unicode") + "\n"


def _cpu(dom: ET.Element, c: CPUConfig) -> None:
    if c.model is None:
        _sub(dom, "cpu", mode="host-model")
        return
    # exact, forbid: the guest gets this CPU or does not start (nor arrives) anywhere
    cpu = _sub(dom, "cpu", mode="custom", match="exact")
    _sub(cpu, "model", c.model, fallback="forbid")
    for policy, names in (("require", c.require), ("disable", c.disable)):
        for name in sorted(names):
            _sub(cpu, "feature", policy=policy, name=name)


def owned_by_kumo(xml: str) -> str | None:
    """The kumo VM name recorded in a domain's XML, or None for domains kumo does not own."""
    return kumo_metadata(xml)[0]


def kumo_metadata(xml: str) -> tuple[str | None, str, bool]:
    """The kumo VM name (None: not kumo's), the config digest ("" when none) and whether HA
    restarts it elsewhere, as recorded in a domain's XML."""
    root = ET.fromstring(xml)
    # a definition, or libvirt's runtime status file (<domstatus> wrapping the <domain>)
    el = root.find(f"metadata/{{{KUMO_XMLNS}}}vm")
    if el is None:
        el = root.find(f"domain/metadata/{{{KUMO_XMLNS}}}vm")
    if el is None:
        return None, "", False
    return el.get("name"), el.get("digest", ""), el.get("ha") == "restart"
