"""The Hypervisor on libvirt (libvirt-python). Lifecycle events come from libvirt's event
loop, run in a daemon thread; the agent only uses them to wake up (it re-reads state)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from kumo.hypervisor.base import Domain, DomainState, HostFacts, HypervisorError
from kumo.hypervisor.domain import DomainConfig, domain_xml, owned_by_kumo

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.RUNNING,  # shutting down: still running
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PAUSED,
}

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


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


class LibvirtHypervisor:
    def __init__(self, uri: str = "qemu:///system", host: str = "") -> None:
        self.uri = uri
        self.host = host or uri
        _ensure_event_loop()
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"libvirtd on {self.host} ({uri}) is unreachable: {exc}") from exc
        self._callbacks: list[Callable[[str], None]] = []

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
            # getInfo's memory comes from the NUMA cells' view, which some virtual machines
            # (this project's among them) report far too small; the kernel's total is right.
            memory_mib = self._kernel_memory_mib() or memory_mib
            qemu = self._conn.getVersion()
            lib = self._conn.getLibVersion()
            hostname = self._conn.getHostname()
        except libvirt.libvirtError as exc:
            raise self._err("host facts", exc) from exc
        return HostFacts(hostname, int(cpus), int(memory_mib), _version(lib), _version(qemu))

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
                state, _ = d.state()
                out.append(
                    Domain(
                        name=d.name(),
                        uuid=d.UUIDString(),
                        state=_STATES.get(state, DomainState.OTHER),
                        kumo_vm=owned_by_kumo(d.XMLDesc(0)),
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

    def undefine(self, name: str) -> None:
        # kumo guests boot through SeaBIOS: no NVRAM to remove.
        self._call(
            name, "undefine", lambda d: d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        )

    def on_change(self, callback: Callable[[str], None]) -> None:
        if not self._callbacks:

            def lifecycle(_conn: Any, dom: Any, _event: int, _detail: int, _opaque: Any) -> None:
                for cb in list(self._callbacks):
                    cb(dom.name())

            self._conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None
            )
        self._callbacks.append(callback)

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()
