"""HA commands: `kumo vm ha`, `kumo host fence` and `kumo ha status|plan|settings`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kumo.cli.client import ClientError
from kumo.cli.cluster import (
    FailbackOpt,
    HostsOpt,
    JsonOpt,
    MaxRelocateOpt,
    MaxRestartOpt,
    PreferredOpt,
    PriorityOpt,
    TokenOpt,
    UrlOpt,
    _call,
    _client,
    _emit,
    _fail,
    _fmt,
    ha_policy,
    ha_summary,
    host_app,
    out,
    vm_app,
)

app = typer.Typer(
    help="High availability: what HA sees, where it would move VMs, its timings.",
    no_args_is_help=True,
)


@vm_app.command("ha")
def vm_ha(
    name: str,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="restart (run it again elsewhere when its host dies) or off"),
    ] = None,
    priority: PriorityOpt = None,
    hosts: HostsOpt = None,
    preferred: PreferredOpt = None,
    failback: FailbackOpt = None,
    max_restart: MaxRestartOpt = None,
    max_relocate: MaxRelocateOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show or change the VM's HA policy (what is not given stays). It applies from the next
    placement or recovery: the VM is not moved now."""
    c = _client(url, token)
    given = ha_policy(policy, priority, hosts, preferred, failback, max_restart, max_relocate)
    current: dict[str, Any] = _call(c, "GET", f"/vms/{name}")["spec"]["ha"]
    if given:
        body = {**current, **given}
        body["hosts"] = body.get("hosts") or None  # [] is "any host": sent as none
        current = _call(c, "PUT", f"/vms/{name}/ha", json=body)
    out.print(f"vm {name}: HA {ha_summary(current)}", highlight=False)


@host_app.command("fence")
def host_fence(
    host: str,
    confirm: Annotated[
        bool, typer.Option("--confirm", help="you confirm HOST is off (powered off or cut off)")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="even while its agent's lease is live: the lease is revoked; if the host "
            "runs after all, its HA VMs may run twice until its agent stops them",
        ),
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Fence HOST on your word that it is off: HA runs its HA VMs elsewhere at once."""
    if not confirm:
        raise _fail(ClientError(f"host {host}: not fenced: add --confirm to say that it is off"))
    body = {"confirm": True, "force": force}
    fenced = _call(_client(url, token), "POST", f"/hosts/{host}/fence", json=body)
    out.print(f"host {host}: fenced at {_fmt(fenced['at'])}: {fenced['reason']}", highlight=False)


@app.command("status")
def ha_status(url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table") -> None:
    """Hosts (lease, fenced, VMs) and HA VMs with their state."""
    data = _call(_client(url, token), "GET", "/ha/status")
    if output == "json":
        _emit(data, output, [])
        return
    hosts = [
        {
            **h,
            "fenced": f"{_fmt(h['fenced']['at'])}: {h['fenced']['reason']}"
            if h["fenced"]
            else None,
        }
        for h in data["hosts"]
    ]
    _emit(hosts, output, ["name", "state", "lease", "fenced", "vms"], title="hosts")
    _emit(
        data["vms"],
        output,
        ["name", "mode", "priority", "host", "state", "message"],
        title="HA VMs",
    )


@app.command("plan")
def ha_plan(
    fail: Annotated[
        str | None,
        typer.Option(help="comma-separated hosts to take as dead (default: those down or fenced)"),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    output: JsonOpt = "table",
) -> None:
    """Where each HA VM of the failed hosts would run again now, and which could not be
    placed and why. Changes nothing."""
    params = {"fail": fail} if fail else {}
    plan = _call(_client(url, token), "GET", "/ha/plan", params=params)
    if output == "json":
        _emit(plan, output, [])
        return
    failed = ", ".join(plan["failed"]) or "none (no host is down or fenced)"
    out.print(f"failed hosts: {failed}", highlight=False)
    _emit(plan["restart"], output, ["vm", "priority", "was_on", "to"], title="would restart")
    if plan["waits"]:
        _emit(plan["waits"], output, ["vm", "priority", "was_on", "reason"], title="would wait")
    if plan["not_recovered"]:
        out.print(f"left alone (HA off or stopped): {', '.join(plan['not_recovered'])}")


@app.command("settings")
def ha_settings(
    grace: Annotated[
        float | None, typer.Option(help="s after a lease expired before fencing the host")
    ] = None,
    stabilisation: Annotated[
        float | None, typer.Option(help="s a host is up before failback VMs return to it")
    ] = None,
    path_interval: Annotated[
        float | None, typer.Option(help="s between pings of the router and the NAS")
    ] = None,
    path_misses: Annotated[
        int | None, typer.Option(help="unanswered pings in a row before a path is down")
    ] = None,
    path_up: Annotated[
        float | None, typer.Option(help="s of answers before a path is up again")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    output: JsonOpt = "table",
) -> None:
    """Show or change the HA timings. The agents' lease TTL is shown only: it is fixed when
    they start (changing it means restarting every agent)."""
    c = _client(url, token)
    data = _call(c, "GET", "/ha/settings")
    asked = {
        "grace_s": grace,
        "stabilisation_s": stabilisation,
        "path_interval_s": path_interval,
        "path_misses": path_misses,
        "path_up_s": path_up,
    }
    if any(v is not None for v in asked.values()):
        body = {k: data[k] if v is None else v for k, v in asked.items()}
        data = _call(c, "PUT", "/ha/settings", json=body)
    if output == "json":
        _emit(data, output, [])
        return
    out.print(f"lease TTL      {data['lease_ttl_s']} s (fixed when the agents start)")
    out.print(f"grace          {data['grace_s']:g} s (after a lease expired, before fencing)")
    out.print(f"stabilisation  {data['stabilisation_s']:g} s (up this long before failback)")
    out.print(
        f"paths          ping every {data['path_interval_s']:g} s; down after "
        f"{data['path_misses']} misses, up after {data['path_up_s']:g} s of answers"
    )
