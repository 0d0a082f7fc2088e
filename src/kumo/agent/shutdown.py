"""What the agent does when systemd stops it: on a reboot, freeze (Proxmox's shutdown policy
"freeze": the host's VMs are shut down here and wait for it, not recovered elsewhere); on
any other stop (an upgrade, `systemctl restart kumo-agent`, a power-off), nothing: its VMs
keep running, or, if the host goes away for good, HA fences it and recovers them.

systemd tells a reboot from a power-off by the job it runs: ``reboot.target`` is queued to
start while the system goes down for a reboot (``systemctl list-jobs``)."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable

from kumo.agent.agent import Agent
from kumo.hypervisor.base import DomainState

log = logging.getLogger("kumo.agent")

FREEZE_WAIT_S = 120.0  # how long the guests get to shut down before the agent exits anyway


def systemd_jobs() -> str:
    """``systemctl list-jobs`` (empty when systemd does not answer: not a reboot)."""
    try:
        out = subprocess.run(
            ["systemctl", "list-jobs", "--no-legend", "--no-pager"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout


def rebooting(jobs: str) -> bool:
    """Whether systemd's job list says the system is going down for a reboot."""
    for line in jobs.splitlines():
        words = line.split()
        if (
            len(words) >= 3
            and words[1] in ("reboot.target", "kexec.target")
            and words[2] == "start"
        ):
            return True
    return False


def on_stop(
    agent: Agent,
    jobs: Callable[[], str] = systemd_jobs,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    wait_s: float = FREEZE_WAIT_S,
) -> list[str]:
    """Called on SIGTERM: freeze when rebooting and wait (up to ``wait_s``) for the guests
    asked to shut down. Returns those guests ([] when not rebooting)."""
    if not rebooting(jobs()):
        log.info("stopping: not a reboot, the VMs are left running")
        return []
    asked = agent.freeze("clean reboot of the host")
    deadline = monotonic() + wait_s
    while monotonic() < deadline:
        running = {d.name for d in agent.hv.domains() if d.state != DomainState.SHUTOFF}
        if not running & set(asked):
            break
        sleep(1.0)
    else:
        log.warning("freeze: guests still running after %.0f s: the reboot stops them", wait_s)
    return asked
