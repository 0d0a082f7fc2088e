"""``kumo watchdog``: a small process per host that fences the host's HA guests when the agent
stops feeding it (hung, killed, stopped), so that no HA VM runs on unfenced while the leader
restarts it elsewhere (docs/adr/0008-high-availability.md).

The agent's self-fence loop touches ``FEED`` four times a second. When the file is older than
``TIMEOUT_S`` the watchdog kills, with SIGKILL, the QEMU of every domain whose live definition
(libvirt's ``/run/libvirt/qemu/<name>.xml``) carries kumo's ``ha="restart"`` mark, reading the
pid from ``<name>.pid``: it needs neither the agent, nor libvirtd, nor the store.

Where the kernel has a watchdog device (``/dev/watchdog``: a hardware timer or softdog), the
watchdog also holds it open, sets its timeout to ``TIMEOUT_S`` and writes a keep-alive byte every
pass while the feed is fresh. Once the feed is stale it stops writing for good, so the kernel
resets the host ``TIMEOUT_S`` later even if the agent comes back meanwhile (by then the leader
may be running the HA VMs elsewhere). The kill stays: the reset lands about ``2 * TIMEOUT_S``
after the agent's last feed, after the leader may have fenced the host; what the reset adds is
cover for a QEMU that survives SIGKILL and for a watchdog process that dies or hangs itself (its
writes stop too). Stopped with SIGTERM or SIGINT while the feed is fresh, it writes the magic
``V`` before closing the device, so the kernel disarms instead of resetting the host; killed, or
stopped once the feed went stale, it closes without it.

The timing: the agent renews its lease every second; the leader fences a host no sooner than
its lease TTL (5 s) after its last renewal plus the grace (2 s). An agent that stops at ``t``
renewed at ``t - 1.1`` at worst (a renewal's round trip included), so the host is fenced at
``t + 5.9`` at the soonest; its last feed was at ``t`` at the latest; the watchdog kills by
``t + TIMEOUT_S + POLL_S`` = ``t + 5.25``. An agent restarted within about five seconds (its
new process feeds the watchdog once registered, about one second after it starts) disturbs
nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, Literal

from kumo.hypervisor.domain import kumo_metadata

log = logging.getLogger("kumo.watchdog")

FEED = Path("/run/kumo/agent.feed")
QEMU_RUN = Path("/run/libvirt/qemu")
DEVICE = Path("/dev/watchdog")
DEVICE_ENV = "KUMO_WATCHDOG_DEVICE"
FROM_ENV: Final = "from-env"
TIMEOUT_S = 5.0
POLL_S = 0.25

# linux/watchdog.h: _IOWR('W', 6, int) and _IOR('W', 7, int), in the asm-generic ioctl encoding
# (x86-64, arm64; not powerpc, mips or sparc, whose direction bits differ).
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
KEEPALIVE = b"\0"  # any byte but "V": a "V" written arms the magic close (close = disarm)
MAGIC_CLOSE = b"V"


def feed(path: Path = FEED) -> None:
    """The agent's side: prove it is alive and deciding (called by its self-fence loop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def ha_guests(run_dir: Path = QEMU_RUN) -> dict[str, int]:
    """The running kumo HA guests on this host and their QEMU pids, from libvirt's runtime
    files alone."""
    out: dict[str, int] = {}
    for status in sorted(run_dir.glob("*.xml")):
        pidfile = status.with_suffix(".pid")
        try:
            _, _, ha = kumo_metadata(status.read_text())
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError, SyntaxError):
            continue  # not a domain's status file, or it went away meanwhile
        if ha:
            out[status.stem] = pid
    return out


def starving(path: Path, now: float, timeout: float = TIMEOUT_S) -> bool:
    """Whether the agent has not fed the watchdog for ``timeout`` seconds (wall clock: the
    file's mtime). A watchdog that was never fed is not armed."""
    try:
        return now - path.stat().st_mtime > timeout
    except FileNotFoundError:
        return False


def bite(
    run_dir: Path = QEMU_RUN,
    kill: Callable[[int, int], None] = os.kill,
    done: set[int] | None = None,
) -> list[str]:
    """Kill the QEMU of every HA guest here but those in ``done`` (killed before: their
    runtime files stay until libvirtd reaps them); returns their names, adds to ``done``."""
    killed = []
    done = set() if done is None else done
    for name, pid in ha_guests(run_dir).items():
        if pid in done:
            continue
        done.add(pid)
        try:
            kill(pid, signal.SIGKILL)
            killed.append(name)
        except ProcessLookupError:
            continue
    return killed


def device_path(
    option: str | None = None, disabled: bool = False, env: Mapping[str, str] = os.environ
) -> Path | None:
    """The watchdog device to use: ``--no-device`` → none; else ``--device``; else
    ``$KUMO_WATCHDOG_DEVICE`` (empty or ``none``: none); else ``/dev/watchdog``."""
    if disabled:
        return None
    value = option if option is not None else env.get(DEVICE_ENV)
    if value is None:
        return DEVICE
    return None if value.strip() in ("", "none") else Path(value)


class Device:
    """The kernel's watchdog device, open (and so armed): the host resets unless it is written
    to within its timeout, or closed after the magic ``V``."""

    def __init__(self, path: Path, fd: int, timeout: int | None) -> None:
        self.path = path
        self.fd = fd
        self.timeout = timeout  # as the driver reports it; None: it would not say
        self._failing = False

    @classmethod
    def open(cls, path: Path, timeout: float = TIMEOUT_S) -> Device | None:
        """Open ``path`` and set its timeout; None if there is no such device (or it cannot be
        opened: then the watchdog kills the HA guests itself, as without one)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error(
                "cannot open %s: %s (another watchdog daemon holds it?); the host will not be "
                "reset, kumo watchdog kills the HA guests itself",
                path,
                exc,
            )
            return None
        return cls(path, fd, _set_timeout(fd, path, round(timeout)))

    def keepalive(self) -> None:
        try:
            os.write(self.fd, KEEPALIVE)
        except OSError as exc:
            if not self._failing:
                log.error("cannot write to %s: %s; the kernel may reset this host", self.path, exc)
            self._failing = True
        else:
            self._failing = False

    def close(self, magic: bool) -> None:
        """Close the device; with ``magic`` the kernel disarms it, without it the host resets
        once the timeout has run out (unless the driver ignores the magic: nowayout)."""
        try:
            if magic:
                os.write(self.fd, MAGIC_CLOSE)
        except OSError as exc:
            log.error("cannot write the magic close to %s: %s; the host may reset", self.path, exc)
        finally:
            os.close(self.fd)


def _set_timeout(fd: int, path: Path, seconds: int) -> int | None:
    """Ask the driver for ``seconds``; it answers with what it set (drivers round). A driver
    that refuses keeps its own, which is reported if it tells it."""
    arg = bytearray(struct.pack("i", seconds))
    try:
        fcntl.ioctl(fd, WDIOC_SETTIMEOUT, arg, True)
        return int(struct.unpack("i", arg)[0])
    except OSError as exc:
        log.warning("cannot set the timeout of %s to %d s: %s; keeping its own", path, seconds, exc)
    try:
        fcntl.ioctl(fd, WDIOC_GETTIMEOUT, arg, True)
        return int(struct.unpack("i", arg)[0])
    except OSError:
        return None


class Watchdog:
    """One host's watchdog; ``run_once(now)`` is one pass, the same in the daemon and in tests."""

    def __init__(
        self,
        feed_path: Path = FEED,
        run_dir: Path = QEMU_RUN,
        device: Device | None = None,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        self.feed_path = feed_path
        self.run_dir = run_dir
        self.device = device
        self.kill = kill
        self.done: set[int] = set()
        self.released = False  # the device is no longer written: the kernel resets the host

    def run_once(self, now: float) -> None:
        if not starving(self.feed_path, now):
            if self.device is not None and not self.released:
                self.device.keepalive()
            return
        if self.device is not None and not self.released:
            self.released = True
            log.warning(
                "agent silent for more than %.1f s: no longer writing %s; the kernel resets "
                "this host in %s s",
                TIMEOUT_S,
                self.device.path,
                self.device.timeout if self.device.timeout is not None else "its timeout,",
            )
        killed = bite(self.run_dir, self.kill, self.done)
        if killed:
            log.warning(
                "agent silent for more than %.1f s: killed HA guests %s (their host may be "
                "fenced and their VMs restarted elsewhere)",
                TIMEOUT_S,
                ", ".join(killed),
            )

    def stop(self) -> None:
        """A clean stop: disarm the device with the magic close, unless the agent went silent
        (then the pending reset is the fence, and stays)."""
        if self.device is None:
            return
        self.device.close(magic=not self.released)
        if self.released:
            log.warning(
                "stopped while the agent is silent: %s left to reset the host", self.device.path
            )
        else:
            log.info("stopped: %s disarmed (magic close)", self.device.path)


def run(
    feed_path: Path = FEED,
    run_dir: Path = QEMU_RUN,
    device: Path | Literal["from-env"] | None = FROM_ENV,
) -> None:  # pragma: no cover - loop (tested in a subprocess)
    """The daemon. ``device``: the watchdog device, None for none, or ``FROM_ENV`` to take it
    from ``device_path()`` (``$KUMO_WATCHDOG_DEVICE``, else ``/dev/watchdog``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    # before the device is opened (armed): a stop from then on must end in the magic close
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    path = device_path() if isinstance(device, str) else device
    dev = Device.open(path) if path is not None else None
    if dev is not None:
        timeout = f"{dev.timeout} s" if dev.timeout is not None else "unknown"
        log.info("using %s (timeout %s)", dev.path, timeout)
    elif path is None:
        log.info("watchdog device disabled: will kill HA guests' QEMU itself")
    else:
        log.info("no %s: will kill HA guests' QEMU itself", path)
    log.info("watching %s (timeout %.1f s); HA guests from %s", feed_path, TIMEOUT_S, run_dir)
    dog = Watchdog(feed_path, run_dir, dev)
    while not stopping:
        dog.run_once(time.time())
        time.sleep(POLL_S)
    log.info("signal %d: stopping", stopping[0])
    dog.stop()
