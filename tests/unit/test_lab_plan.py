"""The lab's topology plan: pure, so checked here without root."""

from __future__ import annotations

import ipaddress

import pytest

from kumo.lab.plan import (
    LAB_RANGE,
    MAX_HOSTS,
    LabPlanError,
    Network,
    Role,
    Route,
    conflicting_routes,
    make_plan,
)


def test_default_plan_mirrors_figure_1() -> None:
    plan = make_plan()
    assert [h.name for h in plan.hosts] == ["h1", "h2", "h3"]
    assert {n.name for n in plan.nodes} == {"h1", "h2", "h3", "nas1", "router", "ctl"}
    assert plan.nas.address(Network.STORAGE) == "198.18.1.10"
    assert plan.host("h1").address(Network.STORAGE) == "198.18.1.11"
    assert plan.host("h1").address(Network.PUBLIC) == "198.18.0.11"
    assert plan.router.address(Network.PUBLIC) == "198.18.0.1"
    assert plan.etcd_endpoint == "http://198.18.1.2:2379"
    assert plan.controller.port(Network.PUBLIC) is None


@pytest.mark.parametrize("hosts", range(1, MAX_HOSTS + 1))
def test_addresses_unique_and_inside_lab_range(hosts: int) -> None:
    plan = make_plan(hosts)
    ports = [p for n in plan.nodes for p in n.ports] + list(plan.root_ports)
    addrs = [p.address.ip for p in ports]
    assert len(addrs) == len(set(addrs))
    assert all(a in LAB_RANGE for a in addrs)
    # Interface names must fit the kernel's 15 characters, and be unique in the switch.
    switch_links = [p.switch_link for p in ports]
    assert len(switch_links) == len(set(switch_links))
    assert all(len(name) <= 15 for name in switch_links + [p.node_link for p in ports])
    assert all(n.netns.startswith("kumo-") for n in plan.nodes)


@pytest.mark.parametrize("bad", [0, -1, 9, 99])
def test_host_count_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(LabPlanError, match=r"hosts: .* 1 to 8"):
        make_plan(bad)


def test_unknown_node_and_non_host_named() -> None:
    plan = make_plan(2)
    with pytest.raises(LabPlanError, match="no such node 'h9'"):
        plan.host("h9")
    with pytest.raises(LabPlanError, match="not a hypervisor host"):
        plan.host("ctl")
    assert plan.node("router").role == Role.ROUTER


def test_default_route_and_lab_routes_do_not_conflict() -> None:
    routes = [
        Route("default", "eth0"),
        Route("192.0.2.0/24", "eth0"),
        Route("198.18.0.0/24", "kumo-pub"),
        Route("198.18.0.0/15", "", "unreachable"),
        Route("198.18.0.254", "kumo-pub", "local", "local"),
    ]
    assert conflicting_routes(routes) == []


@pytest.mark.parametrize(
    "route",
    [
        Route("198.18.5.0/24", "eth0"),
        Route("198.16.0.0/12", "eth1"),  # covers the whole lab range more specifically than default
        Route("198.19.0.7", "tun0"),
        Route("198.18.0.0/15", "eth0"),
    ],
)
def test_foreign_routes_into_lab_range_conflict(route: Route) -> None:
    assert conflicting_routes([Route("default", "eth0"), route]) == [route]


def test_lab_range_is_rfc2544() -> None:
    assert ipaddress.IPv4Network("198.18.0.0/15") == LAB_RANGE
