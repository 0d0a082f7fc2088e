"""The default guest CPU (ADR 0007): the baseline of the registered hosts' CPUs, one per
domain type, computed by an agent through its libvirtd, fixed in a VM's spec at creation,
written into its domain XML, and enforced by the scheduler's cpu-model filter for every
later move."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Literal

import libvirt
import pytest

from kumo.agent.agent import Agent, AgentConfig, cpu_config
from kumo.hypervisor.domain import CPUConfig, DiskConfig, DomainConfig, domain_xml
from kumo.hypervisor.fake import FakeHypervisor
from kumo.hypervisor.libvirt_hv import LibvirtHypervisor, cpu_xml, host_model
from kumo.model.cpu import CLUSTER_DEFAULT, ClusterCPU, CPUDef
from kumo.model.host import HostRecord
from kumo.model.vm import Migration, VMSpec
from kumo.scheduler.cpu import default_baseline
from kumo.scheduler.placement import Chosen, Demand, HostView, NoValidHost, place
from kumo.server.errors import Conflict
from kumo.server.schemas import VMCreate
from kumo.server.service import ClusterService
from kumo.sim.cluster import define_basics, vm_spec
from kumo.storage.pool_identity import FakePoolIds
from kumo.storage.volumes import FakeVolumes
from kumo.store import keys
from kumo.store.base import Delete
from kumo.store.memory import MemoryStore
from kumo.store.records import load, put
from tests.unit.test_domain_xml import check_golden

# The shape of libvirt 9's domain capabilities under TCG (QEMU 7.2): host-model is what QEMU
# can emulate, an AMD EPYC with features added and removed (trimmed here).
TCG_DOMCAPS = """<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>qemu</domain>
  <arch>x86_64</arch>
  <cpu>
    <mode name='host-passthrough' supported='no'/>
    <mode name='host-model' supported='yes'>
      <model fallback='forbid'>EPYC</model>
      <vendor>AMD</vendor>
      <feature policy='require' name='vaes'/>
      <feature policy='require' name='acpi'/>
      <feature policy='disable' name='xsavec'/>
      <feature policy='require' name='umip'/>
      <feature policy='disable' name='rdseed'/>
    </mode>
    <mode name='custom' supported='yes'>
      <model usable='yes' vendor='unknown'>qemu64</model>
      <model usable='no' vendor='AMD'>EPYC</model>
    </mode>
  </cpu>
</domainCapabilities>"""


def cpu_element(cfg: CPUConfig) -> str:
    dom = DomainConfig(
        "web1", "6b756d6f-0000-4000-8000-000000000001", "qemu", 1, 128, (), (), cpu=cfg
    )
    el = ET.fromstring(domain_xml(dom)).find("cpu")
    assert el is not None
    ET.indent(el)
    el.tail = None
    return ET.tostring(el, encoding="unicode") + "\n"


def test_host_model_is_read_from_domain_capabilities() -> None:
    cpu = host_model(TCG_DOMCAPS)
    assert cpu == CPUDef(
        arch="x86_64",
        model="EPYC",
        vendor="AMD",
        require=("acpi", "umip", "vaes"),
        disable=("rdseed", "xsavec"),
    )
    off = TCG_DOMCAPS.replace(
        "name='host-model' supported='yes'", "name='host-model' supported='no'"
    )
    assert host_model(off) is None


def test_baseline_input_keeps_the_policies_and_leaves_out_arch() -> None:
    # With an <arch>, libvirt would read a host CPU and ignore policy='disable'.
    cpu = host_model(TCG_DOMCAPS)
    assert cpu is not None
    root = ET.fromstring(cpu_xml(cpu))
    assert root.find("arch") is None and root.findtext("model") == "EPYC"
    assert {(f.get("policy"), f.get("name")) for f in root.findall("feature")} >= {
        ("disable", "xsavec"),
        ("require", "vaes"),
    }


def test_cluster_default_cpu_element_golden() -> None:
    cpu = host_model(TCG_DOMCAPS)
    assert cpu is not None
    spec = vm_spec("web1").model_copy(update={"cpu": cpu})
    assert spec.cpu_model == CLUSTER_DEFAULT
    check_golden("cpu-cluster-default.xml", cpu_element(cpu_config(spec)))


def test_named_model_and_unknown_baseline() -> None:
    named = cpu_element(cpu_config(vm_spec("a", cpu_model="Nehalem")))
    assert named == (
        '<cpu mode="custom" match="exact">\n  <model fallback="forbid">Nehalem</model>\n</cpu>\n'
    )
    assert cpu_element(cpu_config(vm_spec("b"))) == '<cpu mode="host-model" />\n'


def test_libvirt_accepts_the_cpu_element() -> None:
    cpu = host_model(TCG_DOMCAPS)
    assert cpu is not None
    cfg = DomainConfig(
        "cpu1",
        "6b756d6f-0000-4000-8000-0000000000c1",
        "qemu",
        1,
        128,
        (DiskConfig("/pool/cpu1.qcow2"),),
        (),
        cpu=cpu_config(vm_spec("cpu1").model_copy(update={"cpu": cpu})),
    )
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(domain_xml(cfg))
        el = ET.fromstring(dom.XMLDesc(0)).find("cpu")
        dom.undefine()
    finally:
        conn.close()
    assert el is not None and el.findtext("model") == "EPYC"
    assert ("disable", "rdseed") in {
        (f.get("policy"), f.get("name")) for f in el.findall("feature")
    }


def test_libvirt_without_domain_capabilities_reports_no_cpu() -> None:
    hv = LibvirtHypervisor("test:///default", host="test")
    try:
        facts = hv.facts()
    finally:
        hv.close()
    assert facts.host_cpu is None  # the test driver has no domain capabilities
    assert facts.cpu_error.startswith("libvirt on test: domain capabilities: ")  # and says so


# -- the cluster: agents on fakes, the service, the scheduler --------------------------

OLD = CPUDef(model="Old", features=("fpu", "lm", "sse2"))
NEW = CPUDef(model="New", features=("avx2", "fpu", "lm", "sse2"))


class Cluster:
    def __init__(self, cpus: dict[str, CPUDef | None]) -> None:
        self.store = MemoryStore()
        self.svc = ClusterService(self.store)
        define_basics(self.svc)
        self.pool_ids = FakePoolIds()
        self.hv: dict[str, FakeHypervisor] = {}
        self.agents: dict[str, Agent] = {}
        for h, cpu in cpus.items():
            self.add(h, cpu)

    def add(self, h: str, cpu: CPUDef | None, dtype: Literal["kvm", "qemu"] = "qemu") -> None:
        self.hv[h] = FakeHypervisor(h)
        self.hv[h].host_cpu = cpu
        self.agents[h] = Agent(
            AgentConfig(h, "198.18.1.1", dtype, threaded=False),
            self.store,
            self.hv[h],
            FakeVolumes(),
            path_exists=lambda p: True,
            pool_ids=self.pool_ids,
        )
        self.agents[h].register()

    def baseline(self, dtype: str = "qemu") -> ClusterCPU | None:
        found = load(self.store, ClusterCPU, keys.CLUSTER_CPU + dtype)
        return found[0] if found else None

    def record(self, h: str) -> HostRecord:
        found = load(self.store, HostRecord, keys.HOSTS + h)
        assert found is not None
        return found[0]

    def create(self, name: str, **kw: object) -> VMSpec:
        self.svc.create_vm(VMCreate.model_validate({"name": name, "image": "img", **kw}), "t")
        for a in self.agents.values():
            a.run_once()
        found = load(self.store, VMSpec, keys.VMS + name)
        assert found is not None
        return found[0]

    def domain_cpu(self, name: str) -> CPUConfig:
        return next(hv._doms[name].config.cpu for hv in self.hv.values() if name in hv._doms)


def test_a_vm_without_a_model_gets_the_baseline_of_the_hosts() -> None:
    c = Cluster({"h1": NEW, "h2": OLD})
    base = c.baseline()
    assert base is not None and base.hosts == ("h1", "h2")
    assert base.cpu.features == ("fpu", "lm", "sse2")  # what both hosts offer
    spec = c.create("web1")
    assert spec.cpu_model == CLUSTER_DEFAULT and spec.cpu == base.cpu
    assert c.domain_cpu("web1") == CPUConfig(model=base.cpu.model)


def test_identical_hosts_get_their_own_cpu() -> None:
    c = Cluster({"h1": NEW, "h2": NEW})
    spec = c.create("web1")
    assert spec.cpu is not None and spec.cpu.model == "New" and "avx2" in spec.cpu.features


def test_a_vm_keeps_its_cpu_and_a_host_lacking_a_feature_is_refused() -> None:
    c = Cluster({"h1": NEW, "h2": NEW})
    assert c.create("fast").cpu == NEW  # on h1 or h2
    c.add("h3", OLD)  # an older host joins: new VMs get the lower baseline
    base = c.baseline()
    assert base is not None and base.hosts == ("h1", "h2", "h3") and "avx2" not in base.cpu.features
    with pytest.raises(Conflict, match="h3 lacks avx2"):
        c.svc.migrations.migrate("fast", "h3", "t")
    c.svc.migrations.migrate("fast", None, "t")  # the scheduler picks a host that runs it
    move = load(c.store, Migration, keys.MIGRATIONS + "fast")
    assert move is not None and move[0].target in ("h1", "h2")
    assert c.create("slow", host="h3").cpu == base.cpu
    c.svc.migrations.migrate("slow", "h1", "t")  # the lower baseline runs everywhere


def test_a_named_model_is_kept_and_checked_by_name() -> None:
    c = Cluster({"h1": NEW, "h2": OLD})
    spec = c.create("n", cpu_model="Nehalem")
    assert spec.cpu is None and c.domain_cpu("n") == CPUConfig(model="Nehalem")


def test_no_host_cpu_known_means_host_model() -> None:
    c = Cluster({"h1": None, "h2": None})
    assert c.baseline() is None
    spec = c.create("web1")
    assert spec.cpu is None and c.domain_cpu("web1") == CPUConfig()


def test_a_host_whose_lease_lapsed_stays_in_the_baseline() -> None:
    c = Cluster({"h1": NEW, "h2": OLD})
    rev = c.store.get(keys.CLUSTER_CPU + "qemu")
    c.agents["h1"].refresh_host()
    assert c.store.get(keys.CLUSTER_CPU + "qemu") == rev  # same hosts, same CPUs: not recomputed
    c.store.revoke(c.agents["h2"].lease)  # h2 is away for a moment; its record persists
    c.agents["h1"].refresh_host()
    assert c.store.get(keys.CLUSTER_CPU + "qemu") == rev
    spec = c.create("web1", host="h1")
    assert spec.cpu is not None and "avx2" not in spec.cpu.features  # h2 runs it when back


def test_a_removed_host_leaves_the_baseline() -> None:
    c = Cluster({"h1": NEW, "h2": OLD})
    c.store.commit([], [Delete(keys.HOSTS + "h2")])
    c.agents["h1"].refresh_host()
    base = c.baseline()
    assert base is not None and base.hosts == ("h1",) and "avx2" in base.cpu.features


def racing(c: Cluster, h: str, monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """Make another agent write the baseline it computed from older records while ``h``
    computes its own, ``times`` times; the list counts ``h``'s computations."""
    key, computed = keys.CLUSTER_CPU + "qemu", []
    old = c.baseline()
    assert old is not None
    real = c.hv[h].baseline_cpu

    def baseline_cpu(cpus: Sequence[CPUDef]) -> CPUDef:
        computed.append(1)
        if len(computed) <= times:
            c.store.commit([], [put(key, old)])
        return real(cpus)

    monkeypatch.setattr(c.hv[h], "baseline_cpu", baseline_cpu)
    return computed


def test_a_lost_compare_and_swap_is_tried_again_while_the_baseline_is_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = Cluster({"h1": NEW, "h2": OLD})
    c.store.commit([], [Delete(keys.HOSTS + "h2")])
    computed = racing(c, "h1", monkeypatch, times=1)
    c.agents["h1"].refresh_host()
    base = c.baseline()
    assert base is not None and base.hosts == ("h1",) and len(computed) == 2


def test_the_tries_are_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    c = Cluster({"h1": NEW, "h2": OLD})
    c.store.commit([], [Delete(keys.HOSTS + "h2")])
    computed = racing(c, "h1", monkeypatch, times=100)
    with caplog.at_level(logging.WARNING, logger="kumo.agent"):
        c.agents["h1"].refresh_host()
    assert len(computed) == 3 and "3 compare-and-swaps lost" in caplog.text
    base = c.baseline()
    assert base is not None and base.hosts == ("h1", "h2")  # the other's; the next pass fixes it


def test_each_domain_type_has_its_own_baseline() -> None:
    c = Cluster({"h1": NEW, "h2": NEW})
    c.add("k1", OLD, "kvm")
    qemu, kvm = c.baseline("qemu"), c.baseline("kvm")
    assert qemu is not None and qemu.hosts == ("h1", "h2") and qemu.cpu.model == "New"
    assert kvm is not None and kvm.hosts == ("k1",) and kvm.cpu.model == "Old"
    assert c.create("web1").cpu == qemu.cpu  # the type most hosts have
    assert c.create("web2", host="k1").cpu == kvm.cpu  # the type of the host it names


def test_the_default_type_is_that_of_most_hosts_with_a_cpu_kvm_on_a_tie() -> None:
    def rec(name: str, dtype: Literal["kvm", "qemu"], cpu: CPUDef | None) -> HostRecord:
        return HostRecord(
            name=name,
            address="a",
            cpus=1,
            memory_mib=1,
            libvirt_version="9",
            qemu_version="7",
            domain_type=dtype,
            cpu=cpu,
            agent_port=1,
            registered_at=0,
        )

    bases = {
        t: ClusterCPU(domain_type=t, cpu=OLD, hosts=(), inputs="", computed_by="x", at=0)
        for t in ("kvm", "qemu")
    }
    hosts = {"k": rec("k", "kvm", OLD), "q": rec("q", "qemu", OLD)}
    assert default_baseline(bases, hosts, None) == bases["kvm"]
    hosts |= {"q2": rec("q2", "qemu", OLD), "k2": rec("k2", "kvm", None)}
    assert default_baseline(bases, hosts, None) == bases["qemu"]
    assert default_baseline(bases, hosts, "k2") == bases["kvm"]
    assert default_baseline(bases, {"k2": hosts["k2"]}, None) is None  # no CPU known


def test_a_libvirt_failure_at_registration_keeps_the_recorded_cpu(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Cluster({"h1": NEW, "h2": OLD})
    hv = c.hv["h2"]
    hv.host_cpu, hv.cpu_models = None, ()
    hv.cpu_error = "libvirt on h2: domain capabilities: internal error: QEMU probe timed out"
    with caplog.at_level(logging.WARNING, logger="kumo.agent"):
        c.agents["h2"].register()  # as after a lost lease
    assert c.record("h2").cpu == OLD and c.record("h2").cpu_models == ("qemu64", "Nehalem")
    assert "host h2: CPU not read (libvirt on h2: domain capabilities: internal" in caplog.text
    base = c.baseline()
    assert base is not None and base.hosts == ("h1", "h2")


# -- the filter itself -------------------------------------------------------------------


def host(name: str, features: tuple[str, ...] = ()) -> HostView:
    return HostView(
        name, True, True, 8, 8192, frozenset({"p"}), frozenset(), frozenset(), frozenset(features)
    )


def demand(features: tuple[str, ...]) -> Demand:
    return Demand("vm", 1, 128, "p", frozenset(), cpu_features=frozenset(features))


def test_the_filter_keeps_hosts_offering_every_feature_and_unknown_hosts() -> None:
    need = demand(("avx2", "sse2"))
    assert place(need, [host("h1", ("sse2",)), host("h2", ("avx2", "sse2", "x"))], []) == Chosen(
        "h2"
    )
    assert place(need, [host("h1")], []) == Chosen("h1")  # CPU not known: not refused
    refused = place(need, [host("h1", ("sse2",))], [])
    assert isinstance(refused, NoValidHost) and "h1 lacks avx2" in refused.reason
    assert place(demand(()), [host("h1", ("sse2",))], []) == Chosen("h1")
