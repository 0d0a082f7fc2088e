"""The ``kumo`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from kumo.cli import cluster, ha, lab, migration, profile, sim

app = typer.Typer(
    help="kumo: a private cloud for KVM clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(lab.app, name="lab")
app.add_typer(cluster.host_app, name="host")
app.add_typer(cluster.vm_app, name="vm")
app.add_typer(cluster.image_app, name="image")
app.add_typer(cluster.pool_app, name="pool")
app.add_typer(cluster.network_app, name="network")
app.add_typer(profile.app, name="profile")
app.add_typer(cluster.task_app, name="task")
app.add_typer(migration.policy_app, name="migration-policy")
app.add_typer(ha.app, name="ha")
app.add_typer(sim.app, name="sim")
app.command("events")(cluster.events)


@app.command()
def server(
    etcd: Annotated[str, typer.Option(help="etcd endpoint")] = "http://127.0.0.1:2379",
    listen: Annotated[str, typer.Option(help="address to serve the API on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8080,
    token_file: Annotated[
        Path | None,
        typer.Option(help="on first start, also write the admin token here (mode 0600)"),
    ] = None,
    ident: Annotated[str | None, typer.Option(help="replica name for leader election")] = None,
    strategy: Annotated[str, typer.Option(help="placement: spread or pack")] = "spread",
    cpu_ratio: Annotated[float, typer.Option(help="vCPU overcommit ratio")] = 4.0,
    memory_ratio: Annotated[float, typer.Option(help="memory overcommit ratio")] = 1.0,
) -> None:
    """Run the API server and, when elected leader, the controllers."""
    from kumo.scheduler.placement import Policy
    from kumo.server.main import serve

    if strategy not in ("spread", "pack"):
        raise typer.BadParameter("strategy: use spread or pack")
    if cpu_ratio <= 0 or memory_ratio <= 0:
        raise typer.BadParameter("cpu-ratio and memory-ratio: must be greater than 0")
    policy = Policy(
        cpu_ratio=cpu_ratio,
        memory_ratio=memory_ratio,
        strategy="spread" if strategy == "spread" else "pack",
    )
    serve(etcd, listen, port, token_file, ident, policy)


@app.command()
def watchdog(
    device: Annotated[
        str | None,
        typer.Option(help="watchdog device (default $KUMO_WATCHDOG_DEVICE, else /dev/watchdog)"),
    ] = None,
    no_device: Annotated[
        bool,
        typer.Option("--no-device", help="no kernel watchdog: only kill HA guests' QEMU"),
    ] = False,
) -> None:
    """Run the host's watchdog: kill the HA guests' QEMU when the agent stops feeding it, and
    stop feeding the kernel's watchdog device (the host resets) when it has one."""
    from kumo.agent.watchdog import FEED, QEMU_RUN, device_path, run

    run(FEED, QEMU_RUN, device_path(device, no_device))


@app.command()
def agent(
    address: Annotated[str, typer.Option(help="this host's cluster (storage) address")],
    etcd: Annotated[str, typer.Option(help="etcd endpoint")] = "http://127.0.0.1:2379",
    host: Annotated[str | None, typer.Option(help="host name (default: libvirt's)")] = None,
    port: Annotated[int, typer.Option(help="agent port (console logs)")] = 8776,
    libvirt_uri: Annotated[str, typer.Option(help="libvirt URI")] = "qemu:///system",
    domain_type: Annotated[str, typer.Option(help="kvm or qemu (TCG)")] = "kvm",
) -> None:
    """Run the host agent: register this host and run the VMs placed on it."""
    from kumo.agent.main import run

    if domain_type not in ("kvm", "qemu"):
        raise typer.BadParameter("domain-type: use kvm or qemu")
    dt: Literal["kvm", "qemu"] = "kvm" if domain_type == "kvm" else "qemu"
    run(etcd, host, address, port, libvirt_uri, dt)
