"""Migration commands: `kumo vm migrate`, `kumo vm migration-policy` and the cluster's
`kumo migration-policy show|set`."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from kumo.cli.client import Client, ClientError
from kumo.cli.cluster import (
    JsonOpt,
    TokenOpt,
    UrlOpt,
    _call,
    _client,
    _fail,
    err,
    out,
    vm_app,
)

policy_app = typer.Typer(
    help="The cluster's migration policy and concurrency limits.", no_args_is_help=True
)

BandwidthOpt = Annotated[
    int | None, typer.Option("--bandwidth", help="cap in MiB/s (0: as fast as the link goes)")
]
DowntimeOpt = Annotated[
    int | None, typer.Option("--downtime", help="target switch-over pause in ms (default 300)")
]
MaxDowntimeOpt = Annotated[
    int | None, typer.Option("--max-downtime", help="raise the target on stalls up to this (ms)")
]
AutoConvergeOpt = Annotated[
    bool | None,
    typer.Option("--auto-converge/--no-auto-converge", help="throttle the guest if needed"),
]
XbzrleOpt = Annotated[str | None, typer.Option("--xbzrle", help="auto, on or off")]
CompressionOpt = Annotated[str | None, typer.Option("--compression", help="auto, on or off")]
ParallelOpt = Annotated[
    int | None, typer.Option("--parallel", help="multifd connections (0: one stream)")
]
PostcopyOpt = Annotated[str | None, typer.Option("--postcopy", help="auto or off")]
TimeoutOpt = Annotated[
    int | None, typer.Option("--timeout-per-gib", help="abort after this many s a GiB of RAM")
]


# command option -> policy field, for the options every policy command takes
POLICY_OPTIONS = {
    "bandwidth": "bandwidth_mib_s",
    "downtime": "downtime_ms",
    "max_downtime": "max_downtime_ms",
    "auto_converge": "auto_converge",
    "xbzrle": "xbzrle",
    "compression": "compression",
    "parallel": "parallel",
    "postcopy": "postcopy",
    "timeout_per_gib": "timeout_s_per_gib",
}


def _override(given: dict[str, Any]) -> dict[str, Any]:
    """The policy fields a command's options set (its ``locals()``)."""
    return {f: given[o] for o, f in POLICY_OPTIONS.items() if given.get(o) is not None}


@vm_app.command("migrate")
def vm_migrate(
    name: str,
    to: Annotated[str | None, typer.Option("--to", help="target host (default: scheduler)")] = None,
    wait: Annotated[bool, typer.Option(help="follow it with a progress bar")] = False,
    cold: Annotated[bool, typer.Option("--cold", help="move a stopped VM")] = False,
    bandwidth: BandwidthOpt = None,
    downtime: DowntimeOpt = None,
    max_downtime: MaxDowntimeOpt = None,
    auto_converge: AutoConvergeOpt = None,
    xbzrle: XbzrleOpt = None,
    compression: CompressionOpt = None,
    parallel: ParallelOpt = None,
    postcopy: PostcopyOpt = None,
    timeout_per_gib: TimeoutOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Live-migrate a running VM to another host over the cluster (storage) network, or
    move a stopped one (--cold). Options change the VM's migration policy for this move."""
    c = _client(url, token)
    policy = _override(locals())
    body: dict[str, Any] = {"to": to} if to else {}
    if cold:
        body["cold"] = True
    if policy:
        body["policy"] = policy
    task = _call(c, "POST", f"/vms/{name}/migrate", json=body)
    if not wait:
        said = task["message"] or "requested"
        out.print(f"vm {name}: migration {said} (task {task['id']})", highlight=False)
        return
    task = follow_migration(c, task["id"])
    out.print(f"vm {name}: {task['message']} (task {task['id']})", highlight=False)


def follow_migration(c: Client, task_id: str) -> dict[str, Any]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[detail]}", markup=False),  # the server's words, as they are
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as bar:
        row = bar.add_task("migrating", total=None, rate="", detail="")
        while True:
            task: dict[str, Any] = _call(c, "GET", f"/tasks/{task_id}")
            m = task.get("migration") or {}
            if task["state"] == "queued" and task["message"]:
                bar.update(row, description="queued", detail=task["message"])
            if m.get("bytes_total"):
                s = m.get("strategy") or {}
                throttle = f", throttle {m['throttle_pct']} %" if m.get("throttle_pct") else ""
                bar.update(
                    row,
                    description=s.get("name", "migrating"),
                    total=m["bytes_total"],
                    completed=m["bytes_processed"],
                    rate=f"{m['bandwidth_mib_s']:.1f} MiB/s",
                    detail=(
                        f"iter {m['iteration']}, dirty {m['dirty_rate_pages_s']:.0f} p/s, "
                        f"downtime ~{m['expected_downtime_ms']:.0f}/"
                        f"{m.get('downtime_target_ms') or 0} ms{throttle}"
                    ),
                )
            if task["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.25)
    if task["state"] != "succeeded":
        raise _fail(ClientError(f"task {task_id} {task['state']}: {task['message']}"))
    return task


@vm_app.command("migration-policy")
def vm_migration_policy(
    name: str,
    clear: Annotated[bool, typer.Option("--clear", help="follow the cluster's policy")] = False,
    bandwidth: BandwidthOpt = None,
    downtime: DowntimeOpt = None,
    max_downtime: MaxDowntimeOpt = None,
    auto_converge: AutoConvergeOpt = None,
    xbzrle: XbzrleOpt = None,
    compression: CompressionOpt = None,
    parallel: ParallelOpt = None,
    postcopy: PostcopyOpt = None,
    timeout_per_gib: TimeoutOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show or change this VM's changes to the cluster's migration policy."""
    c = _client(url, token)
    given = _override(locals())
    current = (_call(c, "GET", f"/vms/{name}")["spec"].get("migration")) or {}
    if clear or given:
        current = {} if clear else {**current, **given}
        current = _call(c, "PUT", f"/vms/{name}/migration-policy", json=current)
    shown = {k: v for k, v in current.items() if v is not None}
    out.print(f"vm {name}: {json.dumps(shown) if shown else 'the cluster policy'}")


@policy_app.command("show")
def policy_show(url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table") -> None:
    """The cluster's migration policy and limits."""
    data = _call(_client(url, token), "GET", "/migration-policy")
    if output == "json":
        print(json.dumps(data, indent=2))
        return
    for k, v in data["policy"].items():
        out.print(f"{k:<20} {v}", highlight=False)
    out.print(f"{'max_per_host':<20} {data['max_per_host']}", highlight=False)
    out.print(f"{'max_total':<20} {data['max_total']}", highlight=False)


@policy_app.command("set")
def policy_set(
    bandwidth: BandwidthOpt = None,
    downtime: DowntimeOpt = None,
    max_downtime: MaxDowntimeOpt = None,
    auto_converge: AutoConvergeOpt = None,
    xbzrle: XbzrleOpt = None,
    compression: CompressionOpt = None,
    parallel: ParallelOpt = None,
    postcopy: PostcopyOpt = None,
    timeout_per_gib: TimeoutOpt = None,
    max_per_host: Annotated[
        int | None, typer.Option("--max-per-host", help="migrations at once on a host")
    ] = None,
    max_total: Annotated[
        int | None, typer.Option("--max-total", help="migrations at once in the cluster")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Change the cluster's migration policy and limits (what is not given stays)."""
    c = _client(url, token)
    data = _call(c, "GET", "/migration-policy")
    data["policy"] |= _override(locals())
    if max_per_host is not None:
        data["max_per_host"] = max_per_host
    if max_total is not None:
        data["max_total"] = max_total
    _call(c, "PUT", "/migration-policy", json=data)
    policy_show(url, token)
