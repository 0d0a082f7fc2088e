"""A lab hypervisor host: private libvirt directories, its own libvirtd, virtlogd and virtlockd.

Each host sees its own ``/run``, ``/etc/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt``,
``/var/cache/libvirt`` and ``/var/lib/kumo`` (bind mounts of ``STATE_DIR/<host>/…``), and the
NAS export at ``SHARED_POOL_PATH``, the same path on every host. libvirtd listens on the
storage network with plain TCP and no authentication: acceptable only because the lab's
networks never leave this machine (docs/lab.md says so).
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

from kumo.lab.guest import default_cache
from kumo.lab.namespaces import STATE_DIR, create_host_namespaces, enter, pids_in_netns
from kumo.lab.plan import LIBVIRT_TCP_PORT, SHARED_POOL_PATH, Network, Node
from kumo.lab.services import nas_export
from kumo.lab.shell import LabError, run

PRIVATE_DIRS = {
    "run": "/run",
    "etc-libvirt": "/etc/libvirt",
    "lib-libvirt": "/var/lib/libvirt",
    "log-libvirt": "/var/log/libvirt",
    "cache-libvirt": "/var/cache/libvirt",
    "kumo": "/var/lib/kumo",
}
LAB_UUID_NS = uuid.UUID("6b756d6f-6c61-6200-8000-000000000000")


def host_dir(host: str) -> Path:
    return STATE_DIR / host


def host_uuid(host: str) -> str:
    return str(uuid.uuid5(LAB_UUID_NS, host))


def libvirtd_conf(host: Node) -> str:
    return (
        f"# kumo lab: libvirtd of host {host.name}, plain TCP on the storage network (lab only)\n"
        "listen_tls = 0\n"
        "listen_tcp = 1\n"
        f'tcp_port = "{LIBVIRT_TCP_PORT}"\n'
        f'listen_addr = "{host.address(Network.STORAGE)}"\n'
        'auth_tcp = "none"\n'
        'auth_unix_rw = "none"\n'
        f'host_uuid = "{host_uuid(host.name)}"\n'
    )


# QEMU runs as root without a security driver in the lab: the namespaces are the isolation,
# and AppArmor profiles do not know the lab's private paths.
QEMU_CONF = (
    "# kumo lab\n"
    'user = "root"\n'
    'group = "root"\n'
    'security_driver = "none"\n'
    "dynamic_ownership = 0\n"
    'stdio_handler = "logd"\n'
    'lock_manager = "lockd"\n'
)
# Disk leases held by each host's virtlockd (fcntl locks) on indirect lock files in the shared
# pool, named by the SHA-256 of the disk's path (the same path on every host): a domain left on
# a cut-off host keeps its disk's lease, so no other host can start the VM on that disk. The
# lease dies with the host's virtlockd (a powered-off host frees its disks). libvirt moves the
# lease from source to target at a live migration's switch-over.
LOCKSPACE_DIR = f"{SHARED_POOL_PATH}/.kumo-lockspace"
QEMU_LOCKD_CONF = (
    "# kumo lab\n"
    "auto_disk_leases = 1\n"
    "require_lease_for_disks = 1\n"
    f'file_lockspace_dir = "{LOCKSPACE_DIR}"\n'
)


def prepare_host(host: Node, hosts_file: str) -> None:
    """Create the host's private directories and namespaces (no daemon yet)."""
    base = host_dir(host.name)
    for d in PRIVATE_DIRS:
        (base / d).mkdir(parents=True, exist_ok=True)
    etc = base / "etc-libvirt"
    shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True)
    # The distribution's default NAT network would start a dnsmasq in every host.
    for p in (etc / "qemu" / "networks" / "autostart").glob("*.xml"):
        p.unlink()
    (etc / "libvirtd.conf").write_text(libvirtd_conf(host))
    (etc / "qemu.conf").write_text(QEMU_CONF)
    (etc / "qemu-lockd.conf").write_text(QEMU_LOCKD_CONF)
    (base / "log-libvirt" / "qemu").mkdir(parents=True, exist_ok=True)
    _seed_qemu_capabilities(base / "cache-libvirt" / "qemu" / "capabilities")
    (base / "kumo" / "pools" / "shared").mkdir(parents=True, exist_ok=True)
    # Names resolve from the lab's own hosts file and nothing asks a DNS server: the
    # machine's resolver lies outside the lab (and lookups of it would stall migrations).
    (base / "hosts").write_text(hosts_file)
    (base / "resolv.conf").write_text("# kumo lab: no DNS; names come from /etc/hosts\n")
    (nas_export() / Path(LOCKSPACE_DIR).name).mkdir(parents=True, exist_ok=True)

    for dst in PRIVATE_DIRS.values():
        # Mount points must exist in the root filesystem; /var/lib/kumo is also where
        # kumo keeps host state on a real hypervisor.
        Path(dst).mkdir(parents=True, exist_ok=True)
    binds = "\n".join(f"mount --bind {base / src} {dst}" for src, dst in PRIVATE_DIRS.items())
    script = (
        f"{binds}\n"
        f"mount --bind {nas_export()} {SHARED_POOL_PATH}\n"
        f"mount --bind {base / 'hosts'} /etc/hosts\n"
        f"mount --bind {base / 'resolv.conf'} /etc/resolv.conf\n"
        f"hostname {host.name}\n"
    )
    create_host_namespaces(host.name, host.netns, script)


def _warm_caps_dir() -> Path:
    return default_cache() / "libvirt-qemu-capabilities"


def _seed_qemu_capabilities(dest: Path) -> None:
    """Give a new host libvirt's QEMU capability cache from an earlier lab: probing QEMU
    costs each libvirtd seconds of CPU. libvirt checks the cache's validity itself (QEMU
    and libvirtd binaries, kernel, microcode) and probes again when it is stale."""
    dest.mkdir(parents=True, exist_ok=True)
    warm = _warm_caps_dir()
    if warm.is_dir():
        for f in warm.glob("*.xml"):
            shutil.copy(f, dest / f.name)


def save_qemu_capabilities(host: Node) -> None:
    """Keep a started host's capability cache for the next lab (see above)."""
    src = host_dir(host.name) / "cache-libvirt" / "qemu" / "capabilities"
    warm = _warm_caps_dir()
    warm.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.xml"):
        shutil.copy(f, warm / f.name)


def start_daemons(host: Node) -> None:
    """Start virtlogd, virtlockd and libvirtd in the host (see :func:`wait_libvirtd`)."""
    inside = enter(host.netns, host.name)
    run([*inside, "virtlogd", "-d"])
    run([*inside, "virtlockd", "-d"])
    run([*inside, "libvirtd", "-d", "--listen"])


def wait_libvirtd(hosts: list[Node], timeout: float = 60) -> None:
    """Wait until every host's libvirtd answers (the first start probes QEMU: seconds)."""
    waiting = list(hosts)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        waiting = [h for h in waiting if not libvirtd_answers(h)]
        if waiting:
            time.sleep(0.3)
    if waiting:
        names = ", ".join(h.name for h in waiting)
        raise LabError(
            f"libvirtd on {names} did not answer within {timeout:.0f} s "
            f"(logs: {STATE_DIR}/<host>/log-libvirt)"
        )


def hosts_file(nodes: list[Node]) -> str:
    """/etc/hosts for lab hosts: every node by name (storage address first: cluster
    traffic and migrations use the storage network)."""
    lines = ["127.0.0.1 localhost"]
    for node in nodes:
        addr = node.port(Network.STORAGE) or node.port(Network.PUBLIC)
        assert addr is not None
        lines.append(f"{addr.ip} {node.name}")
        pub = node.port(Network.PUBLIC)
        if pub is not None:
            lines.append(f"{pub.ip} {node.name}-public")
    return "\n".join(lines) + "\n"


def libvirtd_answers(host: Node) -> bool:
    if not pids_in_netns(host.netns):
        return False
    proc = run(
        [*enter(host.netns, host.name), "virsh", "-c", "qemu:///system", "version"],
        check=False,
        timeout=10,
    )
    return proc.returncode == 0
