"""What this machine can do for the lab: does KVM really boot a guest, and which kernel
network features exist. Printed by ``kumo lab up`` and ``kumo lab status``.

The KVM check boots the test guest's kernel with ``-accel kvm`` and waits for its heartbeat:
``/dev/kvm`` existing is not enough (nested KVM on some machines opens but never boots
Linux). The answer is cached per host kernel and guest build.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kumo.lab.guest import GuestImage, default_cache
from kumo.lab.namespaces import netns_add
from kumo.lab.shell import run

PROBE_NETNS = "kumo-probe"
KVM_BOOT_TIMEOUT = 20.0


@dataclass(frozen=True)
class Capabilities:
    kvm_boots: bool
    kvm_detail: str
    bonding: bool
    vlan_8021q: bool
    netem: bool
    vxlan: bool
    tbf: bool

    @property
    def accel(self) -> str:
        return "kvm" if self.kvm_boots else "tcg"

    @property
    def domain_type(self) -> str:
        """libvirt's domain type for guests: 'kvm' or plain emulation, 'qemu'."""
        return "kvm" if self.kvm_boots else "qemu"

    def lines(self) -> list[str]:
        def yn(v: bool) -> str:
            return "yes" if v else "MISSING"

        return [
            f"accelerator: {self.accel.upper()} ({self.kvm_detail})",
            f"kernel features: VXLAN {yn(self.vxlan)}, tc tbf {yn(self.tbf)}, "
            f"bonding {yn(self.bonding)}, 802.1Q VLAN {yn(self.vlan_8021q)}, "
            f"netem {yn(self.netem)}",
        ]


def _kvm_boots(guest: GuestImage) -> tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm; guests use TCG emulation"
    with tempfile.TemporaryDirectory(prefix="kumo-kvm-") as tmp:
        log = Path(tmp) / "serial.log"
        proc = subprocess.Popen(
            [
                "qemu-system-x86_64",
                "-accel",
                "kvm",
                "-m",
                "128",
                "-nographic",
                "-nic",
                "none",
                "-kernel",
                str(guest.kernel),
                "-initrd",
                str(guest.initrd),
                "-append",
                "console=ttyS0 quiet panic=1",
                "-no-reboot",
                "-serial",
                f"file:{log}",
                "-monitor",
                "none",
                "-display",
                "none",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + KVM_BOOT_TIMEOUT
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if log.exists() and b"KUMO-GUEST" in log.read_bytes():
                    return True, "KVM boots the test guest"
                time.sleep(0.5)
        finally:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode not in (None, -9) and err:
            return False, f"KVM refused: {err.decode(errors='replace').strip()[:200]}; using TCG"
        return False, (
            f"/dev/kvm exists but the guest did not boot under KVM within "
            f"{KVM_BOOT_TIMEOUT:.0f} s (nested KVM?); guests use TCG emulation"
        )


def _net_features() -> dict[str, bool]:
    run(["ip", "netns", "del", PROBE_NETNS], check=False)
    netns_add(PROBE_NETNS)
    try:

        def ok(*args: str) -> bool:
            return run(["ip", "netns", "exec", PROBE_NETNS, *args], check=False).returncode == 0

        # A veth pair, not a dummy: some kernels here lack the dummy driver.
        ok("ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
        ok("ip", "link", "set", "d0", "up")
        return {
            "bonding": ok("ip", "link", "add", "b0", "type", "bond"),
            "vlan_8021q": ok(
                "ip", "link", "add", "link", "d0", "name", "v0", "type", "vlan", "id", "10"
            ),
            "netem": ok("tc", "qdisc", "add", "dev", "d0", "root", "netem", "delay", "1ms"),
            "vxlan": ok(
                "ip",
                "link",
                "add",
                "x0",
                "type",
                "vxlan",
                "id",
                "42",
                "dstport",
                "4789",
                "dev",
                "d0",
            ),
            "tbf": ok(
                "tc",
                "qdisc",
                "replace",
                "dev",
                "d0",
                "root",
                "tbf",
                "rate",
                "1mbit",
                "burst",
                "32kb",
                "latency",
                "100ms",
            ),
        }
    finally:
        run(["ip", "netns", "del", PROBE_NETNS], check=False)


def probe(guest: GuestImage, *, refresh: bool = False) -> Capabilities:
    cache_file = default_cache() / "capabilities.json"
    key = f"{os.uname().release}/{guest.directory.name}"
    if not refresh and cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        if cached.get("key") == key:
            return Capabilities(**cached["capabilities"])
    kvm, detail = _kvm_boots(guest)
    caps = Capabilities(kvm_boots=kvm, kvm_detail=detail, **_net_features())
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"key": key, "capabilities": asdict(caps)}, indent=2))
    return caps
