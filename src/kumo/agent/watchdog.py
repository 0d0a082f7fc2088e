"""``kumo watchdog``: a small process per host that fences the host's HA guests when the agent
stops feeding it (hung, killed, stopped), so that no HA VM runs on unfenced while the leader
restarts it elsewhere (docs/adr/0008-high-availability.md).

The agent's self-fence loop touches ``FEED`` four times a second. When the file is older than
``TIMEOUT_S`` the watchdog kills, with SIGKILL, the QEMU of every domain whose live definition
(libvirt's ``/run/libvirt/qemu/<name>.xml``) carries kumo's ``ha="restart"`` mark, reading the
pid from ``<name>.pid``: it needs neither the agent, nor libvirtd, nor the store. The host's
hardware watchdog (``/dev/watchdog``) would reset the whole machine instead; this kernel has
none (no softdog), so kumo kills the guests itself.

The timing: the agent renews its lease every second; the leader fences a host no sooner than
its lease TTL (5 s) after its last renewal plus the grace (2 s). An agent that stops at ``t``
renewed at ``t - 1.1`` at worst (a renewal's round trip included), so the host is fenced at
``t + 5.9`` at the soonest; its last feed was at ``t`` at the latest; the watchdog kills by
``t + TIMEOUT_S + POLL_S`` = ``t + 5.25``. An agent restarted within about five seconds (its
new process feeds the watchdog once registered, about one second after it starts) disturbs
nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from kumo.hypervisor.domain import kumo_metadata

log = logging.getLogger("kumo.watchdog")

FEED = Path("/run/kumo/agent.feed")
QEMU_RUN = Path("/run/libvirt/qemu")
TIMEOUT_S = 5.0
POLL_S = 0.25


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


def run(feed_path: Path = FEED, run_dir: Path = QEMU_RUN) -> None:  # pragma: no cover - loop
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log.info("watching %s (timeout %.1f s); HA guests from %s", feed_path, TIMEOUT_S, run_dir)
    done: set[int] = set()
    while True:
        if starving(feed_path, time.time()):
            killed = bite(run_dir, done=done)
            if killed:
                log.warning(
                    "agent silent for more than %.1f s: killed HA guests %s (their host may be "
                    "fenced and their VMs restarted elsewhere)",
                    TIMEOUT_S,
                    ", ".join(killed),
                )
        time.sleep(POLL_S)
