"""The lab's topology as data: which nodes exist, their namespaces, links and addresses.

Pure: no I/O. ``kumo lab up`` turns a :class:`LabPlan` into namespaces and veths; tests
check the plan itself (tests/unit/test_lab_plan.py).

Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking), so the lab never collides with a
real LAN. The numbering mirrors Figure 1 of the report: the NAS is .10 on the storage network
and hypervisors are .11 upwards on both networks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
PUBLIC_NET = ipaddress.IPv4Network("198.18.0.0/24")
STORAGE_NET = ipaddress.IPv4Network("198.18.1.0/24")
MIN_HOSTS = 1
MAX_HOSTS = 8
DEFAULT_HOSTS = 3
NETNS_PREFIX = "kumo-"
SWITCH_NETNS = "kumo-sw"
# Root namespace side of the lab's veths; every lab link in the root namespace starts so.
ROOT_LINK_PREFIX = "kumo-"
DHCP_RANGE = (PUBLIC_NET[100], PUBLIC_NET[199])
ETCD_CLIENT_PORT = 2379
LIBVIRT_TCP_PORT = 16509
SHARED_POOL_PATH = "/var/lib/kumo/pools/shared"


class Role(StrEnum):
    HOST = "host"
    NAS = "nas"
    ROUTER = "router"
    CONTROLLER = "controller"


class Network(StrEnum):
    PUBLIC = "public"
    STORAGE = "storage"


@dataclass(frozen=True)
class Port:
    """One node's connection to one lab network: a veth pair into the switch."""

    network: Network
    address: ipaddress.IPv4Interface
    node_link: str  # name inside the node (eth0 public, eth1 storage)
    switch_link: str  # name inside the switch namespace

    @property
    def ip(self) -> str:
        return str(self.address.ip)


@dataclass(frozen=True)
class Node:
    name: str
    role: Role
    ports: tuple[Port, ...]

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    def port(self, network: Network) -> Port | None:
        return next((p for p in self.ports if p.network == network), None)

    def address(self, network: Network) -> str:
        port = self.port(network)
        if port is None:
            raise KeyError(f"node {self.name} is not on the {network} network")
        return port.ip


@dataclass(frozen=True)
class LabPlan:
    hosts: tuple[Node, ...]
    nas: Node
    router: Node
    controller: Node
    root_ports: tuple[Port, ...]  # the root namespace's way in (one veth per network)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (*self.hosts, self.nas, self.router, self.controller)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise LabPlanError(f"no such node {name!r} in the lab (nodes: {known})")

    def host(self, name: str) -> Node:
        node = self.node(name)
        if node.role != Role.HOST:
            hosts = ", ".join(h.name for h in self.hosts)
            raise LabPlanError(f"{name!r} is not a hypervisor host (hosts: {hosts})")
        return node

    @property
    def etcd_endpoint(self) -> str:
        return f"http://{self.controller.address(Network.STORAGE)}:{ETCD_CLIENT_PORT}"


class LabPlanError(ValueError):
    """The requested lab cannot be built; the message names the field and what is allowed."""


def _net(network: Network) -> ipaddress.IPv4Network:
    return PUBLIC_NET if network == Network.PUBLIC else STORAGE_NET


def _port(node: str, network: Network, host_index: int) -> Port:
    net = _net(network)
    node_link = "eth0" if network == Network.PUBLIC else "eth1"
    short = "pub" if network == Network.PUBLIC else "sto"
    return Port(
        network=network,
        address=ipaddress.IPv4Interface(f"{net[host_index]}/{net.prefixlen}"),
        node_link=node_link,
        switch_link=f"{node}-{short}",
    )


def make_plan(hosts: int = DEFAULT_HOSTS) -> LabPlan:
    """The lab for ``hosts`` hypervisors (``MIN_HOSTS``..``MAX_HOSTS``)."""
    if isinstance(hosts, bool) or not isinstance(hosts, int):
        raise LabPlanError(f"hosts: must be a whole number from {MIN_HOSTS} to {MAX_HOSTS}")
    if not MIN_HOSTS <= hosts <= MAX_HOSTS:
        raise LabPlanError(
            f"hosts: {hosts} is out of range; the lab runs {MIN_HOSTS} to {MAX_HOSTS} hosts"
        )
    host_nodes = tuple(
        Node(
            name=f"h{i}",
            role=Role.HOST,
            ports=(_port(f"h{i}", Network.PUBLIC, 10 + i), _port(f"h{i}", Network.STORAGE, 10 + i)),
        )
        for i in range(1, hosts + 1)
    )
    return LabPlan(
        hosts=host_nodes,
        nas=Node("nas1", Role.NAS, (_port("nas1", Network.STORAGE, 10),)),
        router=Node("router", Role.ROUTER, (_port("router", Network.PUBLIC, 1),)),
        controller=Node("ctl", Role.CONTROLLER, (_port("ctl", Network.STORAGE, 2),)),
        root_ports=tuple(
            Port(
                network=net,
                address=ipaddress.IPv4Interface(f"{_net(net)[254]}/{_net(net).prefixlen}"),
                node_link=f"{ROOT_LINK_PREFIX}{'pub' if net == Network.PUBLIC else 'sto'}",
                switch_link=f"root-{'pub' if net == Network.PUBLIC else 'sto'}",
            )
            for net in (Network.PUBLIC, Network.STORAGE)
        ),
    )


@dataclass(frozen=True)
class Route:
    """A route of the root namespace, as `ip -j route show table all` reports it."""

    dst: str  # "default" or a CIDR
    dev: str = ""
    type: str = "unicast"
    table: str = "main"


def conflicting_routes(routes: list[Route]) -> list[Route]:
    """Routes that would send part of the lab range somewhere other than the lab.

    A default route is fine (the lab's own /24s and its unreachable /15 are more specific);
    any other route overlapping 198.18.0.0/15 that the lab did not make is a conflict.
    """
    bad = []
    for r in routes:
        if r.dst == "default" or r.table == "local":
            continue
        try:
            net = ipaddress.ip_network(r.dst if "/" in r.dst else f"{r.dst}/32", strict=False)
        except ValueError:
            continue
        if net.version != 4 or net.prefixlen == 0 or not net.overlaps(LAB_RANGE):
            continue
        if r.dev.startswith(ROOT_LINK_PREFIX) or (r.type == "unreachable" and net == LAB_RANGE):
            continue
        bad.append(r)
    return bad
