"""A fake Hypervisor for unit tests and the simulator: domains in memory, instant power
changes, and a guest that obeys ACPI unless told to ignore it. Obeys the hypervisor contract.

Fakes that migrate to each other find each other in a :class:`FakeFabric` handed to each (as
real hosts find each other over the network); there is no process-wide registry, so two
simulated worlds in one process never see each other's hosts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
from kumo.hypervisor.domain import DomainConfig, config_digest
from kumo.model.activity import MigrationProgress
from kumo.model.cpu import CPUDef
from kumo.model.migration import Strategy


@dataclass
class _FakeDomain:
    config: DomainConfig
    state: DomainState = DomainState.SHUTOFF
    boots: int = 0
    transient: bool = False  # undefined while running: gone once it stops
    paused_reason: PauseReason | None = None  # set with state PAUSED


_LIVE = (DomainState.RUNNING, DomainState.PAUSED)  # a paused guest resumed is the same boot

# The fake's host-model CPU; tests give hosts others (CPUDef(model=..., features=...)).
FAKE_CPU = CPUDef(model="fake-cpu", features=("fpu", "lm", "sse2"))


class FakeFabric:
    """The fake hosts that can reach each other, by libvirt URI
    (``fake+tcp://HOST/system``), and whether the path from one host to another is up
    (``connected``: the simulator's storage links)."""

    def __init__(self) -> None:
        self.hosts: dict[str, FakeHypervisor] = {}
        self.connected: Callable[[str, str], bool] = lambda source, target: True

    def join(self, hv: FakeHypervisor) -> None:
        self.hosts[f"fake+tcp://{hv.hostname}/system"] = hv

    def find(self, source: str, uri: str) -> FakeHypervisor | None:
        """The host at ``uri`` as ``source`` reaches it; None: no such host, or no path."""
        dest = self.hosts.get(uri)
        if dest is None or not self.connected(source, dest.hostname):
            return None
        return dest


class FakeHypervisor:
    def __init__(
        self,
        hostname: str = "fake",
        cpus: int = 8,
        memory_mib: int = 16384,
        acpi: bool = True,
        fabric: FakeFabric | None = None,
    ) -> None:
        self.hostname = hostname
        self.cpus = cpus
        self.memory_mib = memory_mib
        self.acpi = acpi  # does the guest obey ACPI power button?
        self._doms: dict[str, _FakeDomain] = {}
        self._callbacks: list[Callable[[str], None]] = []
        self.up = True
        self.cpu_models: tuple[str, ...] = ("qemu64", "Nehalem")
        self.host_cpu: CPUDef | None = FAKE_CPU
        self.cpu_error = ""  # reported with host_cpu None, as libvirt's error
        self.migration_steps = 4  # progress reports before the switch-over
        self.dirty_mib_s: float | None = 0.0  # what dirty_rate() reports
        self.strategies: list[Strategy] = []  # what migrate() was asked to do, in order
        self.targets: list[MigrationTarget] = []
        self.accept_migrations = True  # False: refuses incoming ones, as a broken QEMU would
        self.directives: list[Directive] = []  # what the watcher answered
        self.measured: list[str] = []  # domains whose dirty rate was measured while waiting
        self._sampled: dict[str, float | None] = {}
        self.start_failures: dict[str, int] = {}  # domain -> how many next starts fail
        self.migration_failures: set[str] = set()  # domains whose next migration fails
        self.fabric = fabric  # None: a lone host; migrations find no destination
        if fabric is not None:
            fabric.join(self)

    def _check(self) -> None:
        if not self.up:
            raise HypervisorError(f"libvirtd on {self.hostname} is unreachable: fake is down")

    def _dom(self, name: str) -> _FakeDomain:
        self._check()
        if name not in self._doms:
            raise HypervisorError(f"libvirt on {self.hostname}: no domain {name}")
        return self._doms[name]

    def _set(self, name: str, state: DomainState, paused_reason: PauseReason | None = None) -> None:
        d = self._doms[name]
        if state == DomainState.RUNNING and d.state not in _LIVE:
            d.boots += 1
        d.state = state
        d.paused_reason = paused_reason if state == DomainState.PAUSED else None
        for cb in list(self._callbacks):
            cb(name)

    def facts(self) -> HostFacts:
        self._check()
        return HostFacts(
            self.hostname,
            self.cpus,
            self.memory_mib,
            "9.0.0",
            "7.2.0",
            postcopy=False,
            cpu_models=self.cpu_models,
            host_cpu=self.host_cpu,
            cpu_error=self.cpu_error,
        )

    def baseline_cpu(self, cpus: Sequence[CPUDef]) -> CPUDef:
        """The features every CPU has, under their model when they share one."""
        self._check()
        if not cpus or len({c.arch for c in cpus}) != 1:
            raise HypervisorError(f"libvirt on {self.hostname}: no baseline of {len(cpus)} CPUs")
        common = set.intersection(*(set(c.features) for c in cpus))
        models = {c.model for c in cpus}
        return CPUDef(
            arch=cpus[0].arch,
            model=models.pop() if len(models) == 1 else "fake-baseline",
            features=tuple(sorted(common)),
        )

    def domains(self) -> list[Domain]:
        self._check()
        return [
            Domain(
                n,
                d.config.uuid,
                d.state,
                d.config.name,
                config_digest(d.config),
                d.config.ha,
                d.paused_reason,
            )
            if d.config.owner == "kumo"
            else Domain(n, d.config.uuid, d.state, None, paused_reason=d.paused_reason)
            for n, d in sorted(self._doms.items())
        ]

    def define(self, config: DomainConfig) -> None:
        self._check()
        for n, d in self._doms.items():
            if n != config.name and d.config.uuid == config.uuid:
                raise HypervisorError(f"libvirt on {self.hostname}: uuid {config.uuid} in use")
        if config.name in self._doms:
            self._doms[config.name].config = config
        else:
            self._doms[config.name] = _FakeDomain(config)

    def start(self, name: str) -> None:
        if self._dom(name).state == DomainState.RUNNING:
            raise HypervisorError(f"libvirt on {self.hostname}: start {name}: already running")
        if self.start_failures.get(name, 0) > 0:
            self.start_failures[name] -= 1
            raise HypervisorError(f"libvirt on {self.hostname}: start {name}: QEMU exited")
        self._set(name, DomainState.RUNNING)

    def shutdown(self, name: str) -> None:
        if self._dom(name).state != DomainState.RUNNING:
            raise HypervisorError(f"libvirt on {self.hostname}: shutdown {name}: not running")
        if self.acpi:
            self.destroy(name)

    def destroy(self, name: str) -> None:
        if self._dom(name).state != DomainState.SHUTOFF:
            self._set(name, DomainState.SHUTOFF)
        if self._doms[name].transient:
            del self._doms[name]

    def reboot(self, name: str) -> None:
        if self._dom(name).state != DomainState.RUNNING:
            raise HypervisorError(f"libvirt on {self.hostname}: reboot {name}: not running")
        if self.acpi:
            self.reset(name)

    def reset(self, name: str) -> None:
        d = self._dom(name)
        if d.state != DomainState.RUNNING:
            raise HypervisorError(f"libvirt on {self.hostname}: reset {name}: not running")
        d.boots += 1
        for cb in list(self._callbacks):
            cb(name)

    def resume(self, name: str) -> None:
        if self._dom(name).state != DomainState.PAUSED:
            raise HypervisorError(f"libvirt on {self.hostname}: resume {name}: not paused")
        self._set(name, DomainState.RUNNING)

    def undefine(self, name: str) -> None:
        d = self._dom(name)
        if d.state == DomainState.RUNNING:
            d.transient = True  # as libvirt: it runs on, and vanishes when it stops
        else:
            del self._doms[name]

    def migrate(
        self,
        name: str,
        target: MigrationTarget,
        strategy: Strategy,
        watch: Callable[[MigrationProgress], Directive],
    ) -> MigrationProgress:
        d = self._dom(name)
        self.strategies.append(strategy)
        self.targets.append(target)
        if d.state != DomainState.RUNNING:
            raise HypervisorError(f"libvirt on {self.hostname}: migrate {name}: not running")
        dest = self.fabric.find(self.hostname, target.libvirt_uri) if self.fabric else None
        if dest is None or not dest.up:
            raise HypervisorError(
                f"libvirt on {self.hostname}: migrate {name} to {target.host}: "
                f"unable to connect to {target.libvirt_uri}"
            )
        if not dest.accept_migrations:
            raise HypervisorError(
                f"libvirt on {self.hostname}: migrate {name} to {target.host}: "
                "the destination QEMU refused the incoming migration"
            )
        if name in self.migration_failures:
            self.migration_failures.discard(name)
            raise HypervisorError(
                f"libvirt on {self.hostname}: migrate {name} to {target.host}: "
                "the migration job failed (injected)"
            )
        total = d.config.memory_mib * 2**20
        for step in range(1, self.migration_steps + 1):
            answer = watch(
                MigrationProgress(
                    bytes_total=total,
                    bytes_processed=total * step // 4,
                    bytes_remaining=total - total * step // 4,
                    iteration=1,
                    elapsed_s=float(step),
                )
            )
            self.directives.append(answer)
            if answer.abort:
                raise MigrationCancelled(answer.abort)
        dest._doms[name] = _FakeDomain(d.config, DomainState.RUNNING, d.boots)
        del self._doms[name]
        for hv in (self, dest):
            for cb in list(hv._callbacks):
                cb(name)
        return MigrationProgress(bytes_total=total, bytes_processed=total, downtime_ms=42.0)

    def dirty_rate(self, name: str, seconds: int = 1) -> float | None:
        self._dom(name)
        self.measured.append(name)
        return self.dirty_mib_s

    def start_dirty_rate(self, name: str, seconds: int = 1) -> None:
        self._dom(name)
        self._sampled[name] = self.dirty_mib_s

    def last_dirty_rate(self, name: str) -> float | None:
        self._dom(name)
        return self._sampled.get(name)

    def on_change(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    def close(self) -> None:
        pass

    # for tests: the boot count stands in for the guest's boot id
    def boots(self, name: str) -> int:
        return self._doms[name].boots

    def crash(self, name: str) -> None:
        """For tests: the guest crashes and libvirt keeps the domain in the crashed state."""
        self._set(name, DomainState.CRASHED)

    def pause(self, name: str, reason: PauseReason = PauseReason.USER) -> None:
        """For tests: the domain is paused (by an operator, a migration, ...)."""
        if self._dom(name).state != DomainState.RUNNING:
            raise HypervisorError(f"libvirt on {self.hostname}: suspend {name}: not running")
        self._set(name, DomainState.PAUSED, reason)

    def storage_lost(self) -> list[str]:
        """For tests and the simulator: the NAS is out of reach. Every running guest is
        paused on an I/O error, as QEMU with ``error_policy='stop'`` does at the guest's next
        disk access; nothing resumes them when the NAS is back (the agent does). Returns them."""
        paused = []
        for name, d in sorted(self._doms.items()):
            if d.state == DomainState.RUNNING:
                self._set(name, DomainState.PAUSED, PauseReason.IOERROR)
                paused.append(name)
        return paused

    def guests(self) -> dict[str, DomainState]:
        """For the simulator: each domain's state as QEMU has it, whether libvirtd answers
        or not (the ground truth its invariants check)."""
        return {n: d.state for n, d in sorted(self._doms.items())}

    def kill_ha(self) -> list[str]:
        """For the simulator: the host's watchdog kills the QEMU of every running or paused
        HA guest (its metadata says so), libvirtd or not; libvirt then sees them crashed."""
        killed = []
        for name, d in sorted(self._doms.items()):
            if d.config.ha and d.state in (DomainState.RUNNING, DomainState.PAUSED):
                d.state, d.paused_reason = DomainState.CRASHED, None
                killed.append(name)
        return killed

    def power_off(self) -> None:
        """For the simulator: the host loses power. Every guest dies, transient domains vanish,
        persistent definitions stay (on disk); libvirtd is down until :meth:`power_on`."""
        for name, d in list(self._doms.items()):
            if d.transient:
                del self._doms[name]
            else:
                d.state, d.paused_reason = DomainState.SHUTOFF, None
        self.up = False

    def power_on(self) -> None:
        self.up = True
