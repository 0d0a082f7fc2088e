"""``kumo lab``: the one-machine cluster (see docs/lab.md)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kumo.lab import guest as guest_mod
from kumo.lab import lab as lab_mod
from kumo.lab.plan import (
    DEFAULT_HOSTS,
    MAX_HOSTS,
    MIN_HOSTS,
    LabPlanError,
    Network,
    make_plan,
)
from kumo.lab.shell import LabError

app = typer.Typer(
    help="The lab: a real multi-host KVM cluster on this machine.", no_args_is_help=True
)
# Wide enough for the status table when output goes to a file or a pipe.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", highlight=False)
    return typer.Exit(code=2 if isinstance(exc, LabPlanError) else 1)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise _fail(LabError("kumo lab must run as root (it creates namespaces)"))


@app.command()
def up(
    hosts: Annotated[int, typer.Option(help=f"hypervisor hosts, {MIN_HOSTS} to {MAX_HOSTS}")] = (
        DEFAULT_HOSTS
    ),
) -> None:
    """Bring the lab up: hosts h1..hN, nas1, router and ctl (etcd)."""
    try:
        make_plan(hosts)
        _need_root()
        lab_mod.up(hosts, log=lambda s: out.print(s, highlight=False))
    except (LabError, LabPlanError) as exc:
        raise _fail(exc) from None
    _show_status()
    out.print(
        "\nEnter a node with [bold]kumo lab exec h1 -- virsh list[/]; "
        "take it all down with [bold]kumo lab down[/]."
    )


@app.command()
def status(
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show the lab's nodes, their state and addresses, etcd and the machine's capabilities."""
    _need_root()
    try:
        _show_status(json_out)
    except LabError as exc:
        raise _fail(exc) from None


def _show_status(json_out: bool = False) -> None:
    st = lab_mod.status()
    if json_out:
        import json

        out.print_json(
            json.dumps(
                {
                    "etcd": {"endpoint": st.plan.etcd_endpoint, "healthy": st.etcd_healthy},
                    "nodes": [n.__dict__ for n in st.nodes],
                    "accelerator": st.capabilities.accel if st.capabilities else None,
                }
            )
        )
        return
    table = Table(title="kumo lab")
    for col in ("node", "role", "public", "storage", "state", "detail"):
        table.add_column(col)
    for n in st.nodes:
        color = "green" if n.state == "running" else "red"
        table.add_row(
            n.name,
            n.role,
            n.addresses.get(Network.PUBLIC, ""),
            n.addresses.get(Network.STORAGE, ""),
            f"[{color}]{n.state}[/]",
            n.detail,
        )
    out.print(table)
    out.print(f"etcd: {'healthy' if st.etcd_healthy else 'UNHEALTHY'} at {st.plan.etcd_endpoint}")
    if st.capabilities:
        for line in st.capabilities.lines():
            out.print(line, highlight=False)


@app.command()
def down() -> None:
    """Remove every namespace, process, mount, link and route the lab made."""
    _need_root()
    try:
        removed = lab_mod.down()
    except LabError as exc:
        raise _fail(exc) from None
    if removed:
        out.print(f"lab down: removed {len(removed)} items")
    left = lab_mod.leftovers()
    if left:
        raise _fail(LabError("still present after down: " + ", ".join(left)))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="h1..hN, nas1, router or ctl")],
) -> None:
    """Run a command inside a lab node: `kumo lab exec h1 -- virsh list`."""
    _need_root()
    cmd = list(ctx.args)
    if not cmd:
        raise _fail(
            LabPlanError("exec: give a command after --, e.g. `kumo lab exec h1 -- virsh list`")
        )
    try:
        prefix = lab_mod.exec_prefix(node)
    except (LabError, LabPlanError) as exc:
        raise _fail(exc) from None
    sys.stdout.flush()
    os.execvp(prefix[0], [*prefix, *cmd])


@app.command(context_settings={"allow_extra_args": True})
def fault(
    ctx: typer.Context,
    kind: Annotated[
        str,
        typer.Argument(help="kill-host, kill-libvirtd, kill-agent, cut, partition, slow or heal"),
    ],
) -> None:
    """Inject a fault: kill-host H | kill-libvirtd H | kill-agent H | cut H public|storage |
    partition H | slow H public|storage RATE | heal H."""
    _need_root()
    try:
        out.print(lab_mod.fault(kind, list(ctx.args)), highlight=False)
    except (LabError, LabPlanError) as exc:
        raise _fail(exc) from None


@app.command("build-guest")
def build_guest(
    force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False,
) -> None:
    """Build (or find cached) the test guest: kernel, busybox initramfs, golden qcow2."""
    try:
        image = guest_mod.build_guest(force=force)
    except LabError as exc:
        raise _fail(exc) from None
    out.print(f"test guest: {image.directory} (kernel {image.kernel_release})", highlight=False)
