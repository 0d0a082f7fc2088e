"""`kumo lab fault` for the router, the NAS and the control plane (#11): the words map onto
the fault vocabulary; unknown faults and nodes are refused naming what is allowed, before
anything is touched; the lab's first objects carry the public network's cidr and gateway
and the pool's NAS, as the API's schemas accept them. (tests/unit/test_sim_faults.py has the
host faults; tests/lab/test_netpaths.py uses these end to end.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kumo import faults as f
from kumo.lab import control_plane
from kumo.lab import lab as lab_mod
from kumo.lab.plan import LabPlanError, make_plan
from kumo.server.schemas import ImageImport, NetworkCreate, PoolCreate


@pytest.mark.parametrize(
    ("kind", "args", "fault"),
    [
        ("router-down", [], f.Router(up=False)),
        ("router-up", [], f.Router(up=True)),
        ("nas-down", [], f.Nas(up=False)),
        ("nas-up", [], f.Nas(up=True)),
        ("kill-etcd", [], f.StoreDown()),
        ("kill-leader", [], f.LeaderCrash()),
        ("heal", ["router"], f.Heal("router")),
        ("heal", ["nas1"], f.Heal("nas1")),
        ("heal", ["ctl"], f.Heal("ctl")),
        ("cut", ["h1", "public"], f.Link("h1", "public", up=False)),
    ],
)
def test_the_router_nas_and_control_plane_faults_map_onto_the_vocabulary(
    kind: str, args: list[str], fault: f.Fault
) -> None:
    assert f.from_lab(kind, args) == fault


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        ("router-down", ["h1"], "fault router-down: expected `router-down`"),
        ("nas-up", ["nas1"], "fault nas-up: expected `nas-up`"),
        ("kill-leader", ["ctl"], "fault kill-leader: expected `kill-leader`"),
        ("heal", [], "fault heal: expected `heal NODE`"),
        ("router-sideways", [], "unknown fault 'router-sideways'; known: kill-host"),
    ],
)
def test_bad_words_are_refused_naming_what_is_allowed(
    kind: str, args: list[str], message: str
) -> None:
    with pytest.raises(LabPlanError, match=message):
        lab_mod.fault(kind, args)  # parsing fails first: no lab plan is read


def test_the_unknown_fault_message_lists_the_new_faults() -> None:
    with pytest.raises(f.FaultError) as exc:
        f.from_lab("explode", [])
    for kind in ("router-down", "router-up", "nas-down", "nas-up", "kill-etcd", "kill-leader"):
        assert kind in str(exc.value)


@pytest.fixture
def lab_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab.json as `kumo lab up --hosts 3` writes it: enough for the plan, and nothing
    that a fault could touch (no namespace exists)."""
    state = tmp_path / "lab.json"
    state.write_text(json.dumps({"hosts": 3, "domain_type": "qemu"}))
    monkeypatch.setattr(lab_mod, "STATE_FILE", state)


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        (
            "heal",
            ["switch"],
            "no such node 'switch' in the lab \\(nodes: h1, h2, h3, nas1, router, ctl\\)",
        ),
        ("heal", ["h4"], "no such node 'h4'"),
        ("cut", ["router", "public"], "'router' is not a hypervisor host \\(hosts: h1, h2, h3\\)"),
        ("kill-host", ["nas1"], "'nas1' is not a hypervisor host"),
    ],
)
def test_unknown_or_wrong_nodes_are_refused_naming_the_nodes(
    lab_state: None, kind: str, args: list[str], message: str
) -> None:
    with pytest.raises(LabPlanError, match=message):
        lab_mod.fault(kind, args)


def test_the_lab_defines_the_public_networks_gateway_and_the_pools_nas() -> None:
    requests = control_plane.basics(make_plan(3))
    pools = [PoolCreate.model_validate(b) for p, b in requests if p == "/pools"]
    basics = dict(requests)
    net = NetworkCreate.model_validate(basics["/networks"])
    images = [ImageImport.model_validate(b) for p, b in requests if p == "/images"]
    assert [(p.name, [str(a) for a in p.nas], p.nbd) for p in pools] == [
        ("shared", ["198.18.1.10"], None),  # nas1's storage address
        ("nbd", ["198.18.1.10"], "198.18.1.10:10809"),  # its disks over NBD from nas1
    ]
    assert [(i.name, i.pool) for i in images] == [("testguest", "shared"), ("testguest-nbd", "nbd")]
    assert (net.cidr, str(net.gateway)) == ("198.18.0.0/24", "198.18.0.1")
    assert net.bridge == "br0"
