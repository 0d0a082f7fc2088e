"""Which domains each lab host runs, sampled every 200 ms from inside each host (libvirt's
list of active domains), for the length of a test or a benchmark: the evidence that a VM
never ran on two hosts at once, and when it started running somewhere."""

from __future__ import annotations

import subprocess
import sys
import threading

from kumo import chaos
from kumo.lab.namespaces import enter
from kumo.lab.plan import LabPlan

PERIOD_S = 0.2
_SCRIPT = f"""
import time, libvirt
conn = libvirt.open("qemu:///system")
while True:
    try:
        active = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        names = ",".join(sorted(d.name() for d in active))
    except libvirt.libvirtError:
        names = "?"
    print(f"{{time.time():.3f}} {{names}}", flush=True)
    time.sleep({PERIOD_S})
"""

Sample = tuple[float, frozenset[str]]


class DomainSampler:
    """Start with :meth:`start`, end with :meth:`stop` (in a ``finally``)."""

    def __init__(self, plan: LabPlan) -> None:
        self.plan = plan
        self.samples: dict[str, list[Sample]] = {h.name: [] for h in plan.hosts}
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> DomainSampler:
        for h in self.plan.hosts:
            p = subprocess.Popen(
                [*enter(h.netns, h.name), sys.executable, "-c", _SCRIPT],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self.procs.append(p)
            threading.Thread(target=self._read, args=(h.name, p), daemon=True).start()
        return self

    def _read(self, host: str, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            t, _, names = line.strip().partition(" ")
            if names != "?":  # libvirtd not answering: no sample, not an empty one
                self.samples[host].append((float(t), frozenset(filter(None, names.split(",")))))

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()

    def doubles(self) -> list[str]:
        """VMs seen running on two hosts in samples less than one period apart."""
        found = []
        hosts = sorted(self.samples)
        for i, a in enumerate(hosts):
            for b in hosts[i + 1 :]:
                for ta, na in self.samples[a]:
                    for tb, nb in self.samples[b]:
                        if abs(ta - tb) < PERIOD_S and na & nb:
                            found.append(f"{sorted(na & nb)} on {a} and {b} at {ta:.1f}")
        return found

    def first_running(self, vm: str, after: float, not_on: str = "") -> float | None:
        """When ``vm`` was first seen running after ``after`` on a host other than ``not_on``."""
        times = [
            t
            for h, s in self.samples.items()
            if h != not_on
            for t, names in s
            if t >= after and vm in names
        ]
        return min(times) if times else None

    def hosts_running(self, vm: str) -> set[str]:
        return {h for h, s in self.samples.items() if any(vm in names for _, names in s)}


# -- for runs that kill what they sample (kumo lab chaos) -----------------------------------

_RUNNING_SCRIPT = f"""
import time, libvirt
conn = None
asked = None
while True:
    try:
        if conn is None:
            conn = libvirt.open("qemu:///system")
        asked = time.time()
        running = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING)
        names = ",".join(sorted(d.name() for d in running))
    except libvirt.libvirtError:
        names = "?"
        conn = None
    print(f"{{asked:.3f}} {{time.time():.3f}} {{names}}", flush=True)
    time.sleep({PERIOD_S})
"""
RESPAWN_S = 1.0


class RunningSampler(DomainSampler):
    """Like :class:`DomainSampler`, for runs that kill hosts and libvirtds under it: it lists
    the domains that *run* (libvirt's RUNNING state: a migration's paused target, or a guest
    paused on an I/O error, is not running), opens libvirt again after libvirtd died, and
    starts a host's sampler again (every ``RESPAWN_S``) when ``kill-host`` killed it with
    everything else in the host. A host gives no sample while its libvirtd is away.

    Each sample keeps when libvirt was asked and when it answered (``windows``, judged by
    :func:`kumo.chaos.domain_doubles`: two hosts running a VM at once, robust to a live
    migration's switch-over and to a slow answer); ``samples`` has the answers' times for the
    inherited helpers, whose :meth:`doubles` compares every pair of samples and is meant for
    short tests only."""

    def __init__(self, plan: LabPlan) -> None:
        super().__init__(plan)
        self.windows: dict[str, list[chaos.Sample]] = {h.name: [] for h in plan.hosts}
        self._by_host: dict[str, subprocess.Popen[str]] = {}
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _read(self, host: str, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            asked, _, rest = line.strip().partition(" ")
            answered, _, names = rest.partition(" ")
            if asked == "None" or names == "?":  # libvirtd not answering: no sample
                continue
            seen = frozenset(filter(None, names.split(",")))
            self.windows[host].append((float(asked), float(answered), seen))
            self.samples[host].append((float(answered), seen))

    def _spawn(self, host: str) -> None:
        node = self.plan.host(host)
        p = subprocess.Popen(
            [*enter(node.netns, node.name), sys.executable, "-c", _RUNNING_SCRIPT],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._by_host[host] = p
        self.procs.append(p)
        threading.Thread(target=self._read, args=(host, p), daemon=True).start()

    def start(self) -> RunningSampler:
        for h in self.plan.hosts:
            self._spawn(h.name)
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()
        return self

    def _supervise(self) -> None:
        while not self._stopping.wait(RESPAWN_S):
            for host, p in list(self._by_host.items()):
                if p.poll() is not None and not self._stopping.is_set():
                    self._spawn(host)

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
