"""The lab's wiring: a switch namespace with one bridge per network, a veth per port,
the root namespace's way in, and the guard that keeps lab packets on this machine."""

from __future__ import annotations

import json

from kumo.lab.namespaces import netns_add
from kumo.lab.plan import (
    LAB_RANGE,
    SWITCH_NETNS,
    LabPlan,
    Network,
    Node,
    Port,
    Role,
    Route,
    conflicting_routes,
)
from kumo.lab.shell import LabError, run

BRIDGE = {Network.PUBLIC: "public", Network.STORAGE: "storage"}
HOST_BRIDGE = "br0"  # on each hypervisor: the public NIC and the VMs' taps
GUARD_METRIC = "4242"


def root_routes() -> list[Route]:
    out = run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout
    return [
        Route(
            dst=str(r.get("dst", "")),
            dev=str(r.get("dev", "")),
            type=str(r.get("type", "unicast")),
            table=str(r.get("table", "main")),
        )
        for r in json.loads(out or "[]")
    ]


def check_routes() -> None:
    """Refuse to start when the root namespace already routes part of the lab range."""
    bad = conflicting_routes(root_routes())
    if bad:
        desc = "; ".join(f"{r.dst} dev {r.dev or '-'} ({r.type}, table {r.table})" for r in bad)
        raise LabError(
            f"another route already covers part of {LAB_RANGE}, which the lab uses: {desc}. "
            "Remove it or run the lab on another machine."
        )


def build_switch() -> None:
    netns_add(SWITCH_NETNS)
    for name in BRIDGE.values():
        run(["ip", "-n", SWITCH_NETNS, "link", "add", name, "type", "bridge"])
        # No STP delays, and forward at once: a lab switch, not a campus.
        run(
            [
                "ip",
                "-n",
                SWITCH_NETNS,
                "link",
                "set",
                name,
                "type",
                "bridge",
                "forward_delay",
                "0",
                "stp_state",
                "0",
            ]
        )
        run(["ip", "-n", SWITCH_NETNS, "link", "set", name, "up"])


def _plug(port: Port, node_ns: str | None) -> None:
    """Create the veth for ``port``: one end into the switch, the other into ``node_ns``
    (None: the root namespace)."""
    tmp = f"kumo-t{abs(hash((port.switch_link, node_ns))) % 10**8}"
    run(
        [
            "ip",
            "link",
            "add",
            tmp,
            "type",
            "veth",
            "peer",
            "name",
            port.switch_link,
            "netns",
            SWITCH_NETNS,
        ]
    )
    run(
        [
            "ip",
            "-n",
            SWITCH_NETNS,
            "link",
            "set",
            port.switch_link,
            "master",
            BRIDGE[port.network],
            "up",
        ]
    )
    if node_ns is None:
        run(["ip", "link", "set", tmp, "name", port.node_link])
        run(["ip", "link", "set", port.node_link, "up"])
    else:
        run(["ip", "link", "set", tmp, "netns", node_ns, "name", port.node_link])
        run(["ip", "-n", node_ns, "link", "set", port.node_link, "up"])


def wire_node(node: Node) -> None:
    netns_add(node.netns)
    for port in node.ports:
        _plug(port, node.netns)
        dev = port.node_link
        if node.role == Role.HOST and port.network == Network.PUBLIC:
            # VMs share the host's public NIC through a bridge, as in the report.
            run(["ip", "-n", node.netns, "link", "add", HOST_BRIDGE, "type", "bridge"])
            run(
                [
                    "ip",
                    "-n",
                    node.netns,
                    "link",
                    "set",
                    HOST_BRIDGE,
                    "type",
                    "bridge",
                    "forward_delay",
                    "0",
                    "stp_state",
                    "0",
                ]
            )
            run(["ip", "-n", node.netns, "link", "set", dev, "master", HOST_BRIDGE])
            run(["ip", "-n", node.netns, "link", "set", HOST_BRIDGE, "up"])
            dev = HOST_BRIDGE
        run(["ip", "-n", node.netns, "addr", "add", str(port.address), "dev", dev])
    public = node.port(Network.PUBLIC)
    if public is not None and node.role != Role.ROUTER:
        router_ip = "198.18.0.1"
        run(["ip", "-n", node.netns, "route", "add", "default", "via", router_ip])


def wire_root(plan: LabPlan) -> None:
    """The root namespace's veths, then the guard: an unreachable route for the whole lab
    range, so no packet for 198.18.0.0/15 can leave by the default route."""
    run(["ip", "route", "add", "unreachable", str(LAB_RANGE), "metric", GUARD_METRIC])
    for port in plan.root_ports:
        _plug(port, None)
        run(["ip", "addr", "add", str(port.address), "dev", port.node_link])


def unwire_root(plan_links: list[str]) -> None:
    for link in plan_links:
        run(["ip", "link", "del", link], check=False)
    while run(["ip", "route", "del", "unreachable", str(LAB_RANGE)], check=False).returncode == 0:
        pass


def root_lab_links() -> list[str]:
    """The root namespace's lab links (also those a half-finished `up` left)."""
    out = run(["ip", "-j", "link", "show"]).stdout
    names = [str(link.get("ifname", "")) for link in json.loads(out or "[]")]
    return [n for n in names if n.startswith("kumo-")]
