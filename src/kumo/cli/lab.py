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
        typer.Argument(
            help="kill-host, kill-libvirtd, kill-agent, cut, partition, slow, router-down, "
            "router-up, nas-down, nas-up, kill-etcd, kill-leader or heal"
        ),
    ],
) -> None:
    """Inject a fault: kill-host H | kill-libvirtd H | kill-agent H | cut H public|storage |
    partition H | slow H public|storage RATE | router-down | router-up | nas-down | nas-up |
    kill-etcd | kill-leader | heal NODE (a host, router, nas1 or ctl)."""
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


@app.command()
def chaos(
    faults: Annotated[int, typer.Option(help="how many faults to inject")] = 10,
    seed: Annotated[int, typer.Option(help="the same seed gives the same faults")] = 1,
    json_file: Annotated[
        str | None, typer.Option("--json", help="also write the report to this file")
    ] = None,
    vms: Annotated[int, typer.Option(help="HA VMs the run creates (and deletes)")] = 6,
    min_gap: Annotated[float, typer.Option(help="seconds between faults, at least")] = 5.0,
    max_gap: Annotated[float, typer.Option(help="seconds between faults, at most")] = 20.0,
    min_hold: Annotated[float, typer.Option(help="seconds a fault lasts, at least")] = 5.0,
    max_hold: Annotated[float, typer.Option(help="seconds a fault lasts, at most")] = 30.0,
    settle: Annotated[
        float, typer.Option(help="seconds a healed host (or cluster fault) is left alone")
    ] = 15.0,
    show_plan: Annotated[
        bool, typer.Option(help="only print the faults the seed gives (touches nothing)")
    ] = False,
    hosts: Annotated[
        int, typer.Option(help="with --show-plan and no lab up: the hosts to plan for")
    ] = DEFAULT_HOSTS,
) -> None:
    """Random faults on the running lab (>= 3 hosts) while every host's domains and every
    guest's heartbeat are sampled; reports double runs, VMs not running, tasks not ended
    and recovery times. Always heals the lab and deletes its VMs, also when interrupted."""
    import json

    from kumo.lab import chaos as chaos_mod

    opts = chaos_mod.Options(
        faults=faults,
        seed=seed,
        vms=vms,
        min_gap=min_gap,
        max_gap=max_gap,
        min_hold=min_hold,
        max_hold=max_hold,
        settle=settle,
    )
    if show_plan:
        try:
            names = tuple(h.name for h in make_plan(hosts).hosts)
            if os.geteuid() == 0 and lab_mod.STATE_FILE.exists():
                names = tuple(h.name for h in lab_mod.current_plan().hosts)
            out.print(chaos_mod.plan_table(chaos_mod.plan_for(opts, names)))
        except (LabError, LabPlanError) as exc:
            raise _fail(exc) from None
        return
    _need_root()
    try:
        report = chaos_mod.run(opts, log=lambda s: out.print(s, highlight=False))
    except (LabError, LabPlanError) as exc:
        raise _fail(exc) from None
    except (KeyboardInterrupt, chaos_mod.ChaosInterrupted):
        err.print("chaos: interrupted; the lab was healed and the chaos VMs deleted")
        raise typer.Exit(code=130) from None
    for table in chaos_mod.tables(report):
        out.print(table)
    if json_file:
        with open(json_file, "w") as f:
            json.dump(report.to_json(), f, indent=2)
    if not report.ok:
        raise typer.Exit(code=1)
