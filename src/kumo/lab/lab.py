"""``kumo lab``: bring the one-machine cluster up, report on it, and take it down.

``up`` writes ``RUN_DIR/lab.json`` first and, on any failure, takes everything down again.
``down`` does not trust that file: it removes whatever the lab's names and paths show
(namespaces ``kumo-*``, root links ``kumo-*``, the guard route, mounts and state under the
lab's directories), so it also cleans up after an ``up`` that died half-way.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from kumo import faults as vocabulary
from kumo.lab import (
    control_plane,
    faults,
    guest,
    hypervisor_host,
    namespaces,
    network,
    probe,
    services,
)
from kumo.lab.namespaces import NETNS_DIR, RUN_DIR, STATE_DIR
from kumo.lab.plan import (
    LAB_RANGE,
    NETNS_PREFIX,
    SHARED_POOL_PATH,
    LabPlan,
    LabPlanError,
    Network,
    Node,
    Role,
    make_plan,
)
from kumo.lab.shell import LabError, run

STATE_FILE = RUN_DIR / "lab.json"
GOLDEN_NAME = "testguest.qcow2"


class LabAlreadyUp(LabError):
    pass


class LabNotUp(LabError):
    pass


def current_plan() -> LabPlan:
    """The plan of the running lab; :class:`LabNotUp` when there is none."""
    try:
        info = json.loads(STATE_FILE.read_text())
    except FileNotFoundError:
        raise LabNotUp("the lab is not up; start it with `kumo lab up`") from None
    return make_plan(int(info["hosts"]))


def lab_netns() -> list[str]:
    return [n for n in namespaces.netns_list() if n.startswith(NETNS_PREFIX)]


def up(hosts: int, log: Callable[[str], None] = print) -> tuple[LabPlan, probe.Capabilities]:
    plan = make_plan(hosts)
    if STATE_FILE.exists():
        running = json.loads(STATE_FILE.read_text()).get("hosts")
        raise LabAlreadyUp(
            f"the lab is already up with {running} hosts; "
            "`kumo lab status` shows it, `kumo lab down` removes it"
        )
    if lab_netns():
        raise LabAlreadyUp(
            f"leftovers of an earlier lab exist ({', '.join(lab_netns())}); "
            "run `kumo lab down` first"
        )
    network.check_routes()
    image = guest.find_guest() or guest.build_guest()
    caps = probe.probe(image)
    for line in caps.lines():
        log(line)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(
        json.dumps({"hosts": hosts, "started": time.time(), "domain_type": caps.domain_type})
    )
    try:
        _build(plan, image, caps.domain_type, log)
    except BaseException:
        log("lab up failed; removing what it made")
        down()
        raise
    return plan, caps


def _build(
    plan: LabPlan, image: guest.GuestImage, domain_type: str, log: Callable[[str], None]
) -> None:
    t0 = time.monotonic()
    network.build_switch()
    network.wire_root(plan)
    for node in plan.nodes:
        network.wire_node(node)
    log(
        f"networks wired: public {plan.router.address(Network.PUBLIC)}/24, "
        f"storage {plan.nas.address(Network.STORAGE)}/24 ({time.monotonic() - t0:.1f} s)"
    )
    images = services.nas_export() / "images"
    images.mkdir(parents=True, exist_ok=True)
    shutil.copy(image.golden, images / GOLDEN_NAME)
    nbd_images = services.nbd_export() / "images"  # the NBD pool's own copy of the image
    nbd_images.mkdir(parents=True, exist_ok=True)
    shutil.copy(image.golden, nbd_images / GOLDEN_NAME)
    # No marker to write: the first agent gives the shared pool its id (pool_identity.py).
    hosts_file = hypervisor_host.hosts_file(list(plan.nodes))
    for host in plan.hosts:
        hypervisor_host.prepare_host(host, hosts_file)
        hypervisor_host.start_daemons(host)
    hypervisor_host.wait_libvirtd(list(plan.hosts))
    hypervisor_host.save_qemu_capabilities(plan.hosts[0])
    log(f"{', '.join(h.name for h in plan.hosts)}: libvirtd up ({time.monotonic() - t0:.1f} s)")
    services.start_etcd(plan)
    log(f"ctl: etcd healthy at {plan.etcd_endpoint} ({time.monotonic() - t0:.1f} s)")
    services.start_dhcp(plan)
    log(f"router: DHCP for guests on the public network ({time.monotonic() - t0:.1f} s)")
    services.start_nbd(plan)
    log(f"nas1: NBD server for the nbd pool ({time.monotonic() - t0:.1f} s)")
    control_plane.start_server(plan)
    token = control_plane.write_client_config(plan)
    control_plane.register_basics(plan, token)
    for host in plan.hosts:
        control_plane.start_watchdog(host)
        control_plane.start_agent(plan, host, domain_type)
    control_plane.wait_hosts(plan, token)
    log(
        f"ctl: kumo server at {control_plane.api_url(plan)}; agents up on "
        f"{', '.join(h.name for h in plan.hosts)} ({time.monotonic() - t0:.1f} s)"
    )


def down() -> list[str]:
    """Remove everything the lab made; returns what was removed (empty: nothing was up)."""
    removed: list[str] = []
    netns = lab_netns()
    for ns in netns:
        if namespaces.pids_in_netns(ns):
            namespaces.kill_netns(ns)
            removed.append(f"processes in {ns}")
    if namespaces.NS_DIR.is_dir():
        for f in sorted(namespaces.NS_DIR.glob("*.mnt")):
            namespaces.release_host_namespaces(f.stem)
            removed.append(f"namespaces of {f.stem}")
    namespaces.release_ns_dir()
    for ns in netns:
        run(["ip", "netns", "del", ns])
        removed.append(f"netns {ns}")
    links = network.root_lab_links()
    guard = _guard_present()
    network.unwire_root(links)
    removed.extend(f"link {link}" for link in links)
    if guard:
        removed.append(f"route unreachable {LAB_RANGE}")
    for prefix in (str(RUN_DIR), str(STATE_DIR)):
        for point in namespaces.mounts_under(prefix):
            run(["umount", "-l", point], check=False)
            removed.append(f"mount {point}")
    for d in (STATE_DIR, RUN_DIR):
        if d.exists():
            shutil.rmtree(d)
            removed.append(str(d))
    return removed


def _guard_present() -> bool:
    return any(r.type == "unreachable" and r.dst == str(LAB_RANGE) for r in network.root_routes())


def leftovers() -> list[str]:
    """What the lab would leave behind if it were down now (empty when clean)."""
    found = [f"netns {n}" for n in lab_netns()]
    for n in lab_netns():
        found.extend(f"process {p} in {n}" for p in namespaces.pids_in_netns(n))
    found.extend(f"link {link}" for link in network.root_lab_links())
    if _guard_present():
        found.append(f"route unreachable {LAB_RANGE}")
    for prefix in (str(RUN_DIR), str(STATE_DIR)):
        found.extend(f"mount {m}" for m in namespaces.mounts_under(prefix))
    found.extend(str(d) for d in (RUN_DIR, STATE_DIR) if d.exists())
    return found


@dataclass(frozen=True)
class NodeStatus:
    name: str
    role: str
    addresses: dict[str, str]
    state: str  # "running", "killed", …
    detail: str


@dataclass(frozen=True)
class LabStatus:
    plan: LabPlan
    nodes: tuple[NodeStatus, ...]
    etcd_healthy: bool
    capabilities: probe.Capabilities | None


def status() -> LabStatus:
    plan = current_plan()
    etcd_ok = services.etcd_healthy(plan)
    rows = []
    for node in plan.nodes:
        addrs = {p.network.value: p.ip for p in node.ports}
        if not (NETNS_DIR / node.netns).exists():
            rows.append(NodeStatus(node.name, node.role.value, addrs, "missing", "no namespace"))
            continue
        if node.role == Role.HOST:
            f = faults.host_faults(node)
            state = "killed" if f.powered_off else "running"
            detail = "libvirtd ok" if not f.powered_off else "no libvirtd"
            detail += ", agent ok" if control_plane.agent_running(node) else ", NO AGENT"
            if f.describe() != "none":
                detail += f"; faults: {f.describe()}"
        elif node.role == Role.CONTROLLER:
            state = "running" if etcd_ok else "degraded"
            detail = (
                f"etcd {'healthy' if etcd_ok else 'UNHEALTHY'} at {plan.etcd_endpoint}; "
                f"kumo server {'ok' if control_plane.server_ok(plan) else 'DOWN'} at "
                f"{control_plane.api_url(plan)}"
            )
            ctl_faults = _ctl_faults(plan)
            if ctl_faults:
                detail += f"; faults: {', '.join(ctl_faults)}"
        elif node.role == Role.ROUTER:
            dhcp = services.dhcp_running(plan)
            silent = faults.silenced(node)
            state = "running" if dhcp and not silent else "degraded"
            detail = "gateway; DHCP " + ("serving" if dhcp else "NOT RUNNING")
            if silent:
                detail += "; faults: not answering (router-down)"
        else:
            pool = services.nas_export()
            silent = faults.silenced(node)
            state = "running" if pool.is_dir() and not silent else "degraded"
            detail = f"shared pool at {SHARED_POOL_PATH} on every host"
            if silent:
                detail += "; faults: not answering (nas-down)"
        rows.append(NodeStatus(node.name, node.role.value, addrs, state, detail))
    image = guest.find_guest()
    caps = probe.probe(image) if image else None
    return LabStatus(plan=plan, nodes=tuple(rows), etcd_healthy=etcd_ok, capabilities=caps)


def _ctl_faults(plan: LabPlan) -> list[str]:
    found = [] if services.etcd_pids(plan) else ["etcd not running (kill-etcd)"]
    running = control_plane.server_replicas(plan)
    found.extend(
        f"kumo server replica {r} killed (kill-leader)"
        for r in control_plane.killed_servers()
        if r not in running
    )
    return found


def exec_prefix(node_name: str) -> list[str]:
    plan = current_plan()
    node = plan.node(node_name)
    return namespaces.enter(node.netns, node.name if node.role == Role.HOST else None)


def fault(kind: str, args: list[str]) -> str:
    """Apply one fault; returns a sentence saying what was done. The arguments are read
    through the fault vocabulary the simulator shares (kumo.faults.from_lab); a node that
    is not in the lab is refused before anything changes."""
    try:
        what = vocabulary.from_lab(kind, args)
    except vocabulary.FaultError as exc:
        raise LabPlanError(str(exc)) from None
    plan = current_plan()
    match what:
        case vocabulary.Router(up):
            return _heal_router(plan) if up else _router_down(plan)
        case vocabulary.Nas(up):
            return _heal_nas(plan) if up else _nas_down(plan)
        case vocabulary.StoreDown():
            n = services.kill_etcd(plan)
            return f"ctl: etcd killed ({n} process(es)); `kumo lab fault heal ctl` starts it"
        case vocabulary.LeaderCrash():
            return _kill_leader(plan)
        case vocabulary.Heal(name):
            return heal(plan, plan.node(name))
    host = plan.host(args[0])
    if isinstance(what, vocabulary.PowerOff):
        faults.kill_host(host)
        return f"{host.name}: every process killed (power pulled)"
    if isinstance(what, vocabulary.KillLibvirtd):
        n = faults.kill_libvirtd(host)
        return f"{host.name}: libvirtd killed ({n} process(es)); QEMU goes on"
    if isinstance(what, vocabulary.KillAgent):
        n = faults.kill_agent(host)
        return f"{host.name}: kumo agent killed ({n} process(es))"
    if isinstance(what, vocabulary.Link):
        net = faults.parse_network(what.net)
        faults.cut(plan, host, net)
        return f"{host.name}: {net} link cut"
    if isinstance(what, vocabulary.Partition):
        faults.partition(plan, host)
        return f"{host.name}: partitioned from etcd ({plan.etcd_endpoint}); links stay up"
    if isinstance(what, vocabulary.Slow):
        net = faults.parse_network(what.net)
        rate = faults.parse_rate(args[2])  # tc's own spelling of the rate
        faults.slow(host, net, rate)
        return f"{host.name}: {net} link slowed to {rate}"
    raise LabPlanError(f"fault {kind}: not something the lab can do")  # pragma: no cover


def _router_down(plan: LabPlan) -> str:
    if not faults.silence(plan.router):
        return "router: already not answering"
    return (
        f"router: not answering on the public network ({plan.router.address(Network.PUBLIC)}: "
        "pings, DHCP); links stay up"
    )


def _heal_router(plan: LabPlan) -> str:
    return "router: answering again" if faults.unsilence(plan.router) else "router: nothing to heal"


def _nas_down(plan: LabPlan) -> str:
    if not faults.silence(plan.nas):
        return "nas1: already not answering"
    return (
        f"nas1: not answering on the storage network ({plan.nas.address(Network.STORAGE)}); "
        "guests on the nbd pool pause at their next disk access; the shared pool's disks "
        "(bind-mounted) go on"
    )


def _heal_nas(plan: LabPlan) -> str:
    return "nas1: answering again" if faults.unsilence(plan.nas) else "nas1: nothing to heal"


def _kill_leader(plan: LabPlan) -> str:
    replica = control_plane.leading_replica(plan)
    if replica is None:
        running = sorted(control_plane.server_replicas(plan))
        raise LabError(
            f"ctl: no kumo server replica leads (replicas running: {running or 'none'}); "
            "nothing killed"
        )
    control_plane.kill_server(plan, replica)
    return (
        f"ctl: the leading kumo server (replica {replica}, port "
        f"{control_plane.API_PORT + replica - 1}) killed; `kumo lab fault heal ctl` starts it"
    )


def _heal_ctl(plan: LabPlan) -> str:
    done = []
    if not services.etcd_pids(plan):
        services.start_etcd(plan)
        done.append("etcd started")
    started = control_plane.restart_killed_servers(plan)
    done.extend(f"kumo server replica {r} started" for r in started)
    return "ctl: " + (", ".join(done) if done else "nothing to heal")


def heal(plan: LabPlan, node: Node) -> str:
    """Undo every fault of one node; a sentence saying what was undone."""
    if node.role == Role.ROUTER:
        return _heal_router(plan)
    if node.role == Role.NAS:
        return _heal_nas(plan)
    if node.role == Role.CONTROLLER:
        return _heal_ctl(plan)
    domain_type = json.loads(STATE_FILE.read_text()).get("domain_type", "qemu")
    done = faults.heal(plan, node, domain_type)
    return f"{node.name}: " + (", ".join(done) if done else "nothing to heal")


def heal_all(plan: LabPlan) -> list[str]:
    """Undo every fault of every node, the control plane first (hosts rejoin through it)."""
    order = (plan.controller, plan.router, plan.nas, *plan.hosts)
    return [heal(plan, node) for node in order]
