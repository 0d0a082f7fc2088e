"""The Hypervisor on libvirt (libvirt-python). Lifecycle events come from libvirt's event
loop, run in a daemon thread; the agent only uses them to wake up (it re-reads state)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from xml.etree import ElementTree

import libvirt

from kumo.hypervisor.base import (
    Directive,
    Domain,
    DomainState,
    HostFacts,
    HypervisorError,
    MigrationCancelled,
    MigrationTarget,
    PauseReason,
)
from kumo.hypervisor.domain import DomainConfig, domain_xml, kumo_metadata
from kumo.model.activity import MigrationProgress
from kumo.model.cpu import CPUDef
from kumo.model.migration import Strategy

log = logging.getLogger("kumo.hypervisor")


def _state(state: int, reason: int) -> DomainState:
    # QEMU that dies unexpectedly leaves the domain shut off with reason "crashed" (libvirt
    # reports VIR_DOMAIN_CRASHED itself only for a guest panic with on_crash=preserve).
    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
        return DomainState.CRASHED
    return _STATES.get(state, DomainState.OTHER)


_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.RUNNING,  # shutting down: still running
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PAUSED,
}

_PAUSE_REASONS = {
    libvirt.VIR_DOMAIN_PAUSED_IOERROR: PauseReason.IOERROR,
    libvirt.VIR_DOMAIN_PAUSED_USER: PauseReason.USER,
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: PauseReason.MIGRATION,
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: PauseReason.MIGRATION,
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: PauseReason.POSTCOPY_FAILED,
    libvirt.VIR_DOMAIN_PAUSED_SAVE: PauseReason.SAVE,
    libvirt.VIR_DOMAIN_PAUSED_DUMP: PauseReason.DUMP,
    libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT: PauseReason.SNAPSHOT,
    libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT: PauseReason.SNAPSHOT,
    libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: PauseReason.WATCHDOG,
    libvirt.VIR_DOMAIN_PAUSED_CRASHED: PauseReason.CRASHED,
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: PauseReason.STARTING_UP,
    libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN: PauseReason.SHUTTING_DOWN,
}


def _pause_reason(state: int, reason: int) -> PauseReason | None:
    """Why a paused domain is paused, from ``virDomainGetState``'s reason; None if it runs."""
    if state == libvirt.VIR_DOMAIN_PMSUSPENDED:
        return PauseReason.PM_SUSPENDED
    if state != libvirt.VIR_DOMAIN_PAUSED:
        return None
    return _PAUSE_REASONS.get(reason, PauseReason.OTHER)


_event_loop_started = False
_event_loop_lock = threading.Lock()


def _ensure_event_loop() -> None:
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _progress(stats: dict[str, Any], completed: bool = False) -> MigrationProgress:
    """libvirt's job statistics (virDomainGetJobStats) as kumo's progress record; for a
    completed job, ``downtime`` is the real downtime, else libvirt's expectation."""
    total = int(stats.get("memory_total", 0))
    remaining = int(stats.get("memory_remaining", 0))
    bps = float(stats.get("memory_bps", 0))
    downtime = float(stats.get("downtime", 0))
    return MigrationProgress(
        bytes_total=total,
        bytes_processed=int(stats.get("memory_processed", 0)),
        bytes_remaining=remaining,
        bandwidth_mib_s=bps / 2**20,
        dirty_rate_pages_s=float(stats.get("memory_dirty_rate", 0)),
        iteration=int(stats.get("memory_iteration", 0)),
        expected_downtime_ms=downtime,
        elapsed_s=float(stats.get("time_elapsed", 0)) / 1000,
        eta_s=remaining / bps if bps > 0 else None,
        downtime_ms=downtime if completed and "downtime" in stats else None,
        throttle_pct=int(stats.get("auto_converge_throttle", 0)),
        disk_bytes_total=int(stats.get("disk_total", 0)),
        disk_bytes_processed=int(stats.get("disk_processed", 0)),
        xbzrle_cache_misses=(
            int(stats["compression_cache_misses"]) if "compression_cache_misses" in stats else None
        ),
    )


_SYS_USERFAULTFD = 323  # x86_64


def _userfaultfd() -> bool:
    """Whether this kernel gives QEMU userfaultfd, which post-copy needs."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.syscall(_SYS_USERFAULTFD, os.O_CLOEXEC))
    if fd < 0:
        return False
    os.close(fd)
    return True


def _flags_and_params(s: Strategy, target: MigrationTarget) -> tuple[int, dict[str, Any]]:
    # UNSAFE: libvirt cannot tell that a bind- or NFS-mounted directory is shared; kumo
    # only migrates disks on pools every host registered as reachable (each found the pool's
    # recorded id in its own directory: storage/pool_identity.py), and they use cache='none'.
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | libvirt.VIR_MIGRATE_UNSAFE
    )
    params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: target.migrate_uri}
    if target.copy_storage:
        flags |= (
            libvirt.VIR_MIGRATE_NON_SHARED_INC
            if target.copy_storage == "inc"
            else libvirt.VIR_MIGRATE_NON_SHARED_DISK
        )
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = [target.disk]
    if s.bandwidth_mib_s:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = s.bandwidth_mib_s
    if s.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = s.throttle_initial
        params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = s.throttle_increment
    methods = []
    if s.xbzrle:
        methods.append("xbzrle")
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE] = s.xbzrle_cache_mib * 2**20
    if s.compression:
        methods.append("mt")
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_MT_LEVEL] = 1
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_MT_THREADS] = 2
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_MT_DTHREADS] = 2
    if methods:
        flags |= libvirt.VIR_MIGRATE_COMPRESSED
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = methods
    if s.parallel:
        flags |= libvirt.VIR_MIGRATE_PARALLEL
        params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = s.parallel
    if s.postcopy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if s.bandwidth_mib_s:
            # MiB/s, like VIR_MIGRATE_PARAM_BANDWIDTH (virsh --postcopy-bandwidth passes its
            # MiB/s value straight through; libvirt converts to bytes for QEMU)
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = s.bandwidth_mib_s
    return flags, params


def cpu_xml(cpu: CPUDef) -> str:
    """``cpu`` as input for libvirt's baseline: a guest-style <cpu> without <arch> (as virsh
    makes of domain capabilities), so that libvirt honours the features' policies."""
    root = ElementTree.Element("cpu")
    ElementTree.SubElement(root, "model", fallback="forbid").text = cpu.model
    if cpu.vendor:
        ElementTree.SubElement(root, "vendor").text = cpu.vendor
    for policy, names in (("require", cpu.require), ("disable", cpu.disable)):
        for name in names:
            ElementTree.SubElement(root, "feature", policy=policy, name=name)
    return ElementTree.tostring(root, encoding="unicode")


def _features(el: ElementTree.Element, policies: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        sorted(
            name
            for f in el.findall("feature")
            if (name := f.get("name")) and f.get("policy", "require") in policies
        )
    )


def parse_cpu(el: ElementTree.Element, arch: str) -> CPUDef:
    """A <cpu> (or domain capabilities' host-model <mode>) as a CPUDef, without the expanded
    feature list."""
    model = el.findtext("model")
    if not model:
        raise ValueError("the CPU definition names no model")
    return CPUDef(
        arch=arch,
        model=model,
        vendor=el.findtext("vendor") or None,
        require=_features(el, ("require", "force")),
        disable=_features(el, ("disable", "forbid")),
    )


def host_model(domain_caps: str) -> CPUDef | None:
    """The host-model CPU in libvirt's domain capabilities; None when it has none."""
    root = ElementTree.fromstring(domain_caps)
    mode = root.find("./cpu/mode[@name='host-model']")
    if mode is None or mode.get("supported") != "yes" or not mode.findtext("model"):
        return None
    return parse_cpu(mode, root.findtext("arch") or "x86_64")


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


class LibvirtHypervisor:
    def __init__(
        self, uri: str = "qemu:///system", host: str = "", domain_type: str = "qemu"
    ) -> None:
        self.uri = uri
        self.host = host or uri
        self.domain_type = domain_type
        _ensure_event_loop()
        self._lock = threading.Lock()
        self._c: libvirt.virConnect | None = None
        self._callbacks: list[Callable[[str], None]] = []
        self._conn  # noqa: B018 -- connect now: an unreachable libvirtd is reported at start

    @property
    def _conn(self) -> libvirt.virConnect:
        """The connection to libvirtd, opened again when libvirtd restarted (the old one is
        closed for good then), with the lifecycle events registered again."""
        with self._lock:
            old = self._c
            if old is not None:
                try:
                    if old.isAlive() == 1:
                        return old
                except libvirt.libvirtError:
                    pass
                with contextlib.suppress(libvirt.libvirtError):
                    old.close()
                self._c = None
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise HypervisorError(
                    f"libvirtd on {self.host} ({self.uri}) is unreachable: {exc}"
                ) from exc
            if self._callbacks:
                self._register(conn)
            if old is not None:
                log.warning("libvirtd on %s: connection lost; connected again", self.host)
            self._c = conn
            return conn

    def _register(self, conn: libvirt.virConnect) -> None:
        def lifecycle(_conn: Any, dom: Any, _event: int, _detail: int, _opaque: Any) -> None:
            for cb in list(self._callbacks):
                cb(dom.name())

        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)

    def _err(self, what: str, exc: libvirt.libvirtError) -> HypervisorError:
        return HypervisorError(f"libvirt on {self.host}: {what}: {exc.get_error_message()}")

    def _dom(self, name: str) -> libvirt.virDomain:
        try:
            return self._conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            raise self._err(f"no domain {name}", exc) from exc

    def facts(self) -> HostFacts:
        try:
            _model, memory_mib, cpus, *_ = self._conn.getInfo()
            caps, caps_error = self._domain_caps()
            # getInfo's memory comes from the NUMA cells' view, which some virtual machines
            # (this project's among them) report far too small; the kernel's total is right.
            memory_mib = self._kernel_memory_mib() or memory_mib
            qemu = self._conn.getVersion()
            lib = self._conn.getLibVersion()
            hostname = self._conn.getHostname()
        except libvirt.libvirtError as exc:
            raise self._err("host facts", exc) from exc
        host_cpu, cpu_error = self._host_cpu(caps) if caps else (None, caps_error)
        return HostFacts(
            hostname,
            int(cpus),
            int(memory_mib),
            _version(lib),
            _version(qemu),
            postcopy=_userfaultfd(),
            cpu_models=self._cpu_models(caps) if caps else (),
            host_cpu=host_cpu,
            cpu_error=cpu_error,
        )

    def _domain_caps(self) -> tuple[str | None, str]:
        """libvirt's domain capabilities for the accelerator in use; else None and libvirt's
        error (drivers without them, as test:///default, or a libvirtd that failed)."""
        try:
            caps = self._conn.getDomainCapabilities(None, None, None, self.domain_type, 0)
        except libvirt.libvirtError as exc:
            return None, str(self._err("domain capabilities", exc))
        return str(caps), ""

    @staticmethod
    def _cpu_models(caps: str) -> tuple[str, ...]:
        """The named guest CPU models this host can provide."""
        root = ElementTree.fromstring(caps)
        models = root.findall("./cpu/mode[@name='custom']/model[@usable='yes']")
        return tuple(sorted({m.text for m in models if m.text}))

    def _host_cpu(self, caps: str) -> tuple[CPUDef | None, str]:
        """The host-model CPU with its (migratable) features expanded; else None and why
        (the agent logs it)."""
        cpu = host_model(caps)
        if cpu is None:
            return None, f"libvirt on {self.host}: the domain capabilities offer no host-model CPU"
        try:
            expanded = self.baseline_cpu([cpu])
        except HypervisorError as exc:
            return None, str(exc)
        return cpu.model_copy(update={"features": expanded.features}), ""

    def baseline_cpu(self, cpus: Sequence[CPUDef]) -> CPUDef:
        if not cpus or len({c.arch for c in cpus}) != 1:
            arches = ", ".join(sorted({c.arch for c in cpus})) or "none"
            raise HypervisorError(
                f"libvirt on {self.host}: CPU baseline needs CPUs of one architecture ({arches})"
            )
        arch, xmls = cpus[0].arch, [cpu_xml(c) for c in cpus]
        flags = libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE
        try:
            compact = self._conn.baselineHypervisorCPU(
                None, arch, None, self.domain_type, xmls, flags
            )
            full = self._conn.baselineHypervisorCPU(
                None,
                arch,
                None,
                self.domain_type,
                xmls,
                flags | libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES,
            )
        except libvirt.libvirtError as exc:
            raise self._err(f"CPU baseline of {len(cpus)} CPUs", exc) from exc
        try:
            cpu = parse_cpu(ElementTree.fromstring(compact), arch)
            every = _features(ElementTree.fromstring(full), ("require", "force"))
        except (ElementTree.ParseError, ValueError) as exc:
            raise HypervisorError(f"libvirt on {self.host}: CPU baseline: {exc}") from exc
        return cpu.model_copy(update={"features": every})

    def _kernel_memory_mib(self) -> int:
        try:
            stats = self._conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        except libvirt.libvirtError:
            return 0  # drivers without node memory stats (test:///default)
        return int(stats.get("total", 0)) // 1024

    def domains(self) -> list[Domain]:
        try:
            doms = self._conn.listAllDomains()
            out = []
            for d in doms:
                state, reason = d.state()
                # the persistent definition: a redefined running domain keeps its old live
                # XML (and digest) until it next boots
                vm, digest, ha = kumo_metadata(d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                out.append(
                    Domain(
                        name=d.name(),
                        uuid=d.UUIDString(),
                        state=_state(state, reason),
                        kumo_vm=vm,
                        digest=digest,
                        ha=ha,
                        paused_reason=_pause_reason(state, reason),
                    )
                )
            return out
        except libvirt.libvirtError as exc:
            raise self._err("list domains", exc) from exc

    def define(self, config: DomainConfig) -> None:
        try:
            self._conn.defineXML(domain_xml(config))
        except libvirt.libvirtError as exc:
            raise self._err(f"define {config.name}", exc) from exc

    def _call(self, name: str, what: str, fn: Callable[[libvirt.virDomain], Any]) -> None:
        dom = self._dom(name)
        try:
            fn(dom)
        except libvirt.libvirtError as exc:
            raise self._err(f"{what} {name}", exc) from exc

    def start(self, name: str) -> None:
        self._call(name, "start", lambda d: d.create())

    def shutdown(self, name: str) -> None:
        self._call(name, "shutdown", lambda d: d.shutdown())

    def destroy(self, name: str) -> None:
        dom = self._dom(name)
        if dom.isActive():
            try:
                dom.destroy()
            except libvirt.libvirtError as exc:
                if dom.isActive():
                    raise self._err(f"destroy {name}", exc) from exc

    def reboot(self, name: str) -> None:
        self._call(name, "reboot", lambda d: d.reboot(0))

    def reset(self, name: str) -> None:
        self._call(name, "reset", lambda d: d.reset(0))

    def resume(self, name: str) -> None:
        self._call(name, "resume", lambda d: d.resume())

    def undefine(self, name: str) -> None:
        # kumo guests boot through SeaBIOS: no NVRAM to remove.
        self._call(
            name, "undefine", lambda d: d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        )

    def start_dirty_rate(self, name: str, seconds: int = 1) -> None:
        with contextlib.suppress(libvirt.libvirtError):  # QEMU too old, or not running
            self._dom(name).startDirtyRateCalc(seconds, 0)

    def _dirty_stats(self, name: str) -> dict[str, Any]:
        try:
            [(_d, stats)] = self._conn.domainListGetStats(
                [self._dom(name)], libvirt.VIR_DOMAIN_STATS_DIRTYRATE
            )
        except libvirt.libvirtError:
            return {}
        return dict(stats)

    def last_dirty_rate(self, name: str) -> float | None:
        stats = self._dirty_stats(name)
        if stats.get("dirtyrate.calc_status") != 2:  # 2: measured
            return None
        return float(stats.get("dirtyrate.megabytes_per_second", 0))

    def dirty_rate(self, name: str, seconds: int = 1) -> float | None:
        dom = self._dom(name)
        try:
            dom.startDirtyRateCalc(seconds, 0)
        except libvirt.libvirtError:
            return None
        deadline = time.monotonic() + seconds + 5
        time.sleep(seconds)
        while time.monotonic() < deadline:
            if self._dirty_stats(name).get("dirtyrate.calc_status") == 2:
                return self.last_dirty_rate(name)
            time.sleep(0.05)
        return None

    def migrate(
        self,
        name: str,
        target: MigrationTarget,
        strategy: Strategy,
        watch: Callable[[MigrationProgress], Directive],
    ) -> MigrationProgress:
        dom = self._dom(name)
        flags, params = _flags_and_params(strategy, target)
        failure: list[BaseException] = []

        def job_active() -> bool:
            try:
                return bool(dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE)
            except libvirt.libvirtError:
                return False

        def wait_job() -> None:
            """Until the job has looked ended three times in a row (one look may miss it)."""
            quiet = 0
            while quiet < 3:
                quiet = 0 if job_active() else quiet + 1
                time.sleep(0.2)

        # A migration started before this agent restarted is carried on by libvirtd (peer
        # to peer): watch it to its end instead of starting another.
        attach = job_active()

        def run() -> None:
            if attach:
                wait_job()
                return
            try:
                dom.migrateToURI3(target.libvirt_uri, params, flags)
            except libvirt.libvirtError as exc:
                if "another migration job is already running" in str(exc):
                    # the earlier agent's job, which the first look did not see (seen in
                    # the lab under load): watch it to its end as above
                    wait_job()
                    return
                failure.append(exc)

        worker = threading.Thread(target=run, name=f"migrate-{name}", daemon=True)
        worker.start()
        last = MigrationProgress()
        aborted: str | None = None
        downtime_set = False
        postcopy = False
        began = time.monotonic()
        while worker.is_alive():
            worker.join(0.5)
            if not worker.is_alive():
                break
            try:
                stats = dom.jobStats()
                if not stats or stats.get("type") == libvirt.VIR_DOMAIN_JOB_NONE:
                    continue
                if not downtime_set:
                    dom.migrateSetMaxDowntime(strategy.downtime_ms, 0)
                    downtime_set = True
                last = _progress(stats)
                answer = watch(last)
                if answer.downtime_ms is not None:
                    dom.migrateSetMaxDowntime(answer.downtime_ms, 0)
                if answer.postcopy and not postcopy:
                    dom.migrateStartPostCopy(0)
                    postcopy = True
                if answer.abort and not aborted:
                    aborted = answer.abort
                    dom.abortJob()
            except libvirt.libvirtError:
                pass  # the job is ending
        if failure:
            exc = failure[0]
            assert isinstance(exc, libvirt.libvirtError)
            if aborted:
                raise MigrationCancelled(aborted)
            raise self._err(f"migrate {name} to {target.host}", exc) from exc
        if aborted and self._still_here(name):
            raise MigrationCancelled(aborted)
        # The source domain is gone (undefined): the completed job's statistics, with the real
        # downtime, are kept by the destination's libvirtd.
        arrived = True
        try:
            dest = libvirt.open(target.libvirt_uri)
            try:
                there = dest.lookupByName(name)
                arrived = bool(there.isActive())
                stats = there.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
            finally:
                dest.close()
            if arrived and stats and "memory_total" in stats:
                return _progress(stats, completed=True).model_copy(update={"postcopy": postcopy})
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                arrived = False
        if not arrived:
            # a job watched after a restart (or one that ended oddly) that did not move it
            raise HypervisorError(
                f"libvirt on {self.host}: migrate {name}: the job ended and {name} is not "
                f"running on {target.host}"
            )
        if postcopy:
            # libvirt keeps no statistics of a job that ended in post-copy: the last sample,
            # with the time it took; the pause itself is not measured.
            return last.model_copy(
                update={
                    "postcopy": True,
                    "bytes_remaining": 0,
                    "bytes_processed": last.bytes_total,
                    "elapsed_s": time.monotonic() - began,
                    "eta_s": 0.0,
                }
            )
        if self._still_here(name):
            raise HypervisorError(
                f"libvirt on {self.host}: migrate {name}: the job ended and {name} still runs here"
            )
        return last

    def _still_here(self, name: str) -> bool:
        try:
            dom = self._conn.lookupByName(name)
            return bool(dom.isActive())
        except libvirt.libvirtError:
            return False

    def on_change(self, callback: Callable[[str], None]) -> None:
        first = not self._callbacks
        self._callbacks.append(callback)
        if first:
            self._register(self._conn)

    def close(self) -> None:
        if self._c is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._c.close()
