"""`kumo agent`: wires the real store, libvirt and qemu-img into the agent and runs it."""

from __future__ import annotations

import logging
import signal
import socket
from typing import Literal

from kumo.agent import http, ping, shutdown, watchdog
from kumo.agent.agent import Agent, AgentConfig, AgentDaemon
from kumo.hypervisor.libvirt_hv import LibvirtHypervisor
from kumo.server.auth import AGENT_SECRET
from kumo.storage.volumes import QemuImgVolumes
from kumo.store.base import StoreUnavailable
from kumo.store.etcd import EtcdStore


def run(
    etcd: str,
    host: str | None,
    address: str,
    port: int,
    libvirt_uri: str,
    domain_type: Literal["kvm", "qemu"],
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    store = EtcdStore(etcd)
    hv = LibvirtHypervisor(libvirt_uri, host=host or socket.gethostname(), domain_type=domain_type)
    name = host or hv.facts().hostname
    config = AgentConfig(host=name, address=address, domain_type=domain_type, agent_port=port)

    agent = Agent(
        config,
        store,
        hv,
        QemuImgVolumes(),
        kill_guests=watchdog.bite,
        route_problem=ping.route_problem,
    )

    def secret() -> str:
        """The agent secret; while etcd is out of reach, the one last read (peers must still
        be able to ask whether this host holds its lease)."""
        try:
            entry = store.get(AGENT_SECRET)
        except StoreUnavailable:
            return agent.secret or "\0unavailable"
        if entry is None:
            return "\0none"
        agent.secret = entry.value.decode()
        return agent.secret

    http.serve(
        address, port, config.serial_log_dir, secret, agent.incoming, lease=agent.lease_state
    )

    def stop(_signum: int, _frame: object) -> None:
        shutdown.on_stop(agent)  # a reboot freezes the host's VMs (shutdown.py)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    AgentDaemon(agent).run()
