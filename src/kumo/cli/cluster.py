"""Client commands: `kumo host|vm|image|pool|network|task|events …` (they talk to the API only)."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kumo.cli.client import Client, ClientError, settings

# markup off: names, messages and paths from the server are printed as they are ("[/pool]"
# is text, not a closing tag); styles are given as Text, never as markup in a string
out = Console(width=None if sys.stdout.isatty() else 160, markup=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160, markup=False)

UrlOpt = Annotated[str | None, typer.Option("--url", help="server URL (or KUMO_URL)")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="API token (or KUMO_TOKEN)")]
JsonOpt = Annotated[str, typer.Option("--output", "-o", help="table or json")]


def _client(url: str | None, token: str | None) -> Client:
    try:
        return Client(settings(url, token))
    except ClientError as exc:
        raise _fail(exc) from None


def _fail(exc: ClientError) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), f" {exc}"), highlight=False)
    return typer.Exit(code=1)


def _call(c: Client, method: str, path: str, **kw: Any) -> Any:
    try:
        return c.call(method, path, **kw)
    except ClientError as exc:
        raise _fail(exc) from None


def _emit(data: Any, output: str, columns: list[str], title: str = "") -> None:
    if output == "json":
        print(json.dumps(data, indent=2))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(title=title or None)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[_fmt(row.get(col), col) for col in columns])
    out.print(table)


def _fmt(v: Any, column: str = "time") -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    if column == "progress" and isinstance(v, int | float):
        return f"{100 * v:.0f} %"
    if isinstance(v, float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v))
    return str(v)


host_app = typer.Typer(help="Hypervisor hosts.", no_args_is_help=True)
vm_app = typer.Typer(help="Virtual machines.", no_args_is_help=True)
image_app = typer.Typer(help="Images VMs are cloned from.", no_args_is_help=True)
pool_app = typer.Typer(help="Storage pools.", no_args_is_help=True)
network_app = typer.Typer(help="Networks VMs attach to.", no_args_is_help=True)
task_app = typer.Typer(help="Operations and their progress.", no_args_is_help=True)

HOST_COLS = [
    "name",
    "state",
    "schedulable",
    "address",
    "cpus",
    "memory_mib",
    "vms",
    "vcpus_used",
    "memory_used_mib",
    "paths",
    "reason",
]
VM_COLS = ["name", "state", "host", "vcpus", "memory_mib", "disk_gib", "image", "message"]
TASK_COLS = ["id", "kind", "target", "state", "progress", "message", "actor", "created_at"]


@host_app.command("list")
def host_list(url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table") -> None:
    """List hosts with their state, usage, network paths and why a host is not up."""
    data = _call(_client(url, token), "GET", "/hosts")
    _emit(data if output == "json" else [_host_row(h) for h in data], output, HOST_COLS)


def _host_row(h: dict[str, Any]) -> dict[str, Any]:
    """A host as a table row: its paths in short ("public up, storage down") and the reason
    it is fenced, degraded or in maintenance."""
    paths = h.get("paths") or {}
    shown = [f"{net} {paths[net]['state']}" for net in ("public", "storage") if net in paths]
    reason = ""
    if h.get("fenced"):
        reason = f"fenced: {h['fenced']['reason']}"
    elif h.get("degraded"):
        reason = f"degraded: {h['degraded']['reason']}"
    elif h.get("maintenance"):
        reason = f"{h['maintenance']}: {h.get('maintenance_message', '')}".rstrip(": ")
    return {**h, "paths": ", ".join(shown) or None, "reason": reason or None}


@host_app.command("show")
def host_show(
    name: str, url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table"
) -> None:
    """Show one host."""
    data = _call(_client(url, token), "GET", f"/hosts/{name}")
    if output == "json":
        _emit(data, output, [])
        return
    rec = data.pop("record")
    data = _host_row(data)
    data.update(
        {k: rec[k] for k in ("libvirt_version", "qemu_version", "domain_type", "pools", "networks")}
    )
    _emit(
        data,
        output,
        [*HOST_COLS, "libvirt_version", "qemu_version", "domain_type", "pools", "networks"],
    )


maintenance_app = typer.Typer(help="Take a host out of service and back.", no_args_is_help=True)
host_app.add_typer(maintenance_app, name="maintenance")


@maintenance_app.command("enter")
def maintenance_enter(
    host: str,
    wait: Annotated[bool, typer.Option(help="wait until no running VM is left on it")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Make HOST unschedulable and live-migrate its running VMs away."""
    c = _client(url, token)
    (task,) = _call(c, "POST", f"/hosts/{host}/maintenance", json={"action": "enter"})
    if not wait:
        out.print(f"host {host}: draining (task {task['id']})", highlight=False)
        return
    deadline = time.monotonic() + 1800
    while True:
        task = _call(c, "GET", f"/tasks/{task['id']}")
        if task["state"] == "succeeded":
            out.print(f"host {host}: in maintenance: {task['message']}", highlight=False)
            return
        if task["state"] in ("failed", "cancelled") or time.monotonic() > deadline:
            raise _fail(ClientError(f"host {host}: {task['state']}: {task['message']}"))
        time.sleep(1)


@maintenance_app.command("exit")
def maintenance_exit(
    host: str,
    failback: Annotated[bool, typer.Option(help="move the VMs that left back")] = True,
    wait: Annotated[bool, typer.Option(help="wait for the fail-back migrations")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Make HOST schedulable again and, by default, move back the VMs that left it."""
    c = _client(url, token)
    tasks = _call(
        c, "POST", f"/hosts/{host}/maintenance", json={"action": "exit", "failback": failback}
    )
    out.print(f"host {host}: schedulable; {len(tasks)} VM(s) moving back", highlight=False)
    if wait:
        for t in tasks:
            _wait_task(c, t["id"])


# HA policy options of `vm create` and `vm ha`: option -> the policy field
HAPolicyOpt = Annotated[
    str | None,
    typer.Option("--ha", help="restart (run it again elsewhere when its host dies) or off"),
]
PriorityOpt = Annotated[
    int | None, typer.Option(help="HA priority 0-1000: higher is recovered first")
]
HostsOpt = Annotated[
    str | None,
    typer.Option(help="comma-separated hosts it may run on ('' : any host)"),
]
PreferredOpt = Annotated[
    str | None, typer.Option(help="host chosen when it can take the VM ('' : none)")
]
FailbackOpt = Annotated[
    bool | None,
    typer.Option("--failback/--no-failback", help="return to the preferred host once it is up"),
]
MaxRestartOpt = Annotated[
    int | None, typer.Option(help="failed starts retried on one host (default 1)")
]
MaxRelocateOpt = Annotated[
    int | None, typer.Option(help="then moves to another host before error (default 1)")
]


def ha_policy(
    policy: str | None,
    priority: int | None,
    hosts: str | None,
    preferred: str | None,
    failback: bool | None,
    max_restart: int | None,
    max_relocate: int | None,
) -> dict[str, Any]:
    """The HA policy fields the options give (as the API takes them); '' clears a host list
    or the preferred host."""
    given: dict[str, Any] = {}
    if policy is not None:
        given["mode"] = policy
    if priority is not None:
        given["priority"] = priority
    if hosts is not None:
        given["hosts"] = [h.strip() for h in hosts.split(",") if h.strip()] or None
    if preferred is not None:
        given["preferred"] = preferred or None
    for key, value in (
        ("failback", failback),
        ("max_restart", max_restart),
        ("max_relocate", max_relocate),
    ):
        if value is not None:
            given[key] = value
    return given


@vm_app.command("create")
def vm_create(
    name: str,
    image: Annotated[str, typer.Option(help="image to clone")],
    vcpus: Annotated[int, typer.Option(help="virtual CPUs")] = 1,
    cpu_model: Annotated[
        str,
        typer.Option(help="guest CPU model, e.g. Nehalem; default: the baseline all hosts run"),
    ] = "cluster-default",
    memory: Annotated[int, typer.Option(help="memory in MiB")] = 512,
    disk_size: Annotated[int | None, typer.Option(help="disk in GiB (default: image)")] = None,
    network: Annotated[
        list[str] | None, typer.Option(help="network (repeat for more NICs)")
    ] = None,
    pool: Annotated[str | None, typer.Option(help="storage pool (default: the image's)")] = None,
    full_clone: Annotated[bool, typer.Option(help="full copy instead of a linked clone")] = False,
    host: Annotated[str | None, typer.Option(help="pin to this host")] = None,
    affinity: Annotated[str | None, typer.Option(help="affinity group")] = None,
    anti_affinity: Annotated[str | None, typer.Option(help="anti-affinity group")] = None,
    ssh_key: Annotated[
        list[str] | None, typer.Option(help="SSH public key for cloud-init (repeat for more)")
    ] = None,
    runcmd: Annotated[
        list[str] | None, typer.Option(help="command cloud-init runs once (repeat for more)")
    ] = None,
    no_start: Annotated[bool, typer.Option(help="create stopped")] = False,
    ha: HAPolicyOpt = None,
    priority: PriorityOpt = None,
    hosts: HostsOpt = None,
    preferred: PreferredOpt = None,
    failback: FailbackOpt = None,
    max_restart: MaxRestartOpt = None,
    max_relocate: MaxRelocateOpt = None,
    wait: Annotated[bool, typer.Option(help="wait until it runs")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    output: JsonOpt = "table",
) -> None:
    """Create a VM: placed by the scheduler, disk cloned from IMAGE, started. Its HA policy
    (default: restart, priority 0, any host) is set by --ha, --priority, --hosts, …"""
    body: dict[str, Any] = {
        "name": name,
        "image": image,
        "vcpus": vcpus,
        "cpu_model": cpu_model,
        "memory_mib": memory,
        "networks": network or ["public"],
        "clone": "full" if full_clone else "linked",
        "start": not no_start,
        "ssh_keys": ssh_key or [],
        "runcmd": runcmd or [],
    }
    for k, v in (
        ("disk_gib", disk_size),
        ("pool", pool),
        ("host", host),
        ("affinity", affinity),
        ("anti_affinity", anti_affinity),
    ):
        if v is not None:
            body[k] = v
    policy = ha_policy(ha, priority, hosts, preferred, failback, max_restart, max_relocate)
    if policy:
        body["ha"] = policy
    c = _client(url, token)
    result = _call(c, "POST", "/vms", json=body)
    if wait:
        _wait_task(c, result["task"]["id"])
        result["vm"] = _call(c, "GET", f"/vms/{name}")
    if output == "json":
        _emit(result, output, [])
    else:
        vm = result["vm"]
        out.print(
            f"vm {name}: placed on {vm['host']}, {vm['state']} (task {result['task']['id']})",
            highlight=False,
        )


@vm_app.command("list")
def vm_list(
    url: UrlOpt = None,
    token: TokenOpt = None,
    output: JsonOpt = "table",
    page_size: Annotated[int, typer.Option(help="VMs fetched per request")] = 500,
) -> None:
    """List every VM with its state and host."""
    c = _client(url, token)
    data: list[dict[str, Any]] = []
    after = ""
    while True:
        page = _call(c, "GET", "/vms", params={"limit": page_size, "after": after})
        data.extend(page)
        if len(page) < page_size:
            break
        after = page[-1]["name"]
    if output == "json":
        for d in data:
            d.pop("spec", None)
            d.pop("status", None)
    _emit(data, output, VM_COLS)


@vm_app.command("show")
def vm_show(
    name: str, url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table"
) -> None:
    """Show one VM, with its HA policy."""
    data = _call(_client(url, token), "GET", f"/vms/{name}")
    _emit(data, output, [*VM_COLS, "power", "pool", "networks", "task"])
    if output != "json":
        out.print(f"HA: {ha_summary(data['spec']['ha'])}", highlight=False)


def ha_summary(ha: dict[str, Any]) -> str:
    """An HA policy in one line: ``restart, priority 100, hosts h1,h2, preferred h1, …``."""
    parts = [ha["mode"], f"priority {ha['priority']}"]
    if ha.get("hosts"):
        parts.append(f"hosts {','.join(ha['hosts'])}")
    if ha.get("preferred"):
        parts.append(f"preferred {ha['preferred']}")
    if ha.get("failback"):
        parts.append("failback")
    parts.append(f"max-restart {ha['max_restart']}, max-relocate {ha['max_relocate']}")
    return ", ".join(parts)


def _power(
    action: str, name: str, force: bool, wait: bool, url: str | None, token: str | None
) -> None:
    c = _client(url, token)
    task = _call(c, "POST", f"/vms/{name}/{action}", json={"force": force})
    if wait:
        task = _wait_task(c, task["id"])
    out.print(f"vm {name}: {action} {task['state']} (task {task['id']})", highlight=False)


ForceOpt = Annotated[bool, typer.Option(help="stop: power off at once; reboot: hard reset")]
WaitOpt = Annotated[bool, typer.Option(help="wait for the task to finish")]


@vm_app.command("start")
def vm_start(name: str, wait: WaitOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Start a VM."""
    _power("start", name, False, wait, url, token)


@vm_app.command("stop")
def vm_stop(
    name: str,
    force: ForceOpt = False,
    wait: WaitOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Stop a VM: ACPI shutdown, forced off after its stop timeout (or at once with --force)."""
    _power("stop", name, force, wait, url, token)


@vm_app.command("reboot")
def vm_reboot(
    name: str,
    force: ForceOpt = False,
    wait: WaitOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Reboot a VM (ACPI; --force: hard reset)."""
    _power("reboot", name, force, wait, url, token)


@vm_app.command("delete")
def vm_delete(name: str, wait: WaitOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Delete a VM: its domain and its disk."""
    c = _client(url, token)
    task = _call(c, "DELETE", f"/vms/{name}")
    if wait:
        task = _wait_task(c, task["id"])
    out.print(f"vm {name}: delete {task['state']} (task {task['id']})", highlight=False)


@vm_app.command("console-log")
def vm_console_log(
    name: str,
    bytes_: Annotated[int, typer.Option("--bytes")] = 65536,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print the VM's serial console output (the last --bytes)."""
    sys.stdout.write(
        _call(_client(url, token), "GET", f"/vms/{name}/console-log", params={"bytes": bytes_})
    )


def _wait_task(c: Client, task_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = _call(c, "GET", f"/tasks/{task_id}")
        if task["state"] in ("succeeded", "failed", "cancelled"):
            if task["state"] != "succeeded":
                raise _fail(ClientError(f"task {task_id} {task['state']}: {task['message']}"))
            return task
        if time.monotonic() > deadline:
            raise _fail(ClientError(f"task {task_id} still {task['state']} after {timeout:.0f} s"))
        time.sleep(0.5)


@image_app.command("list")
def image_list(url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table") -> None:
    """List images."""
    _emit(
        _call(_client(url, token), "GET", "/images"),
        output,
        ["name", "pool", "path", "format", "size_gib"],
    )


@image_app.command("import")
def image_import(
    name: str,
    pool: Annotated[str, typer.Option(help="pool holding the file")],
    path: Annotated[str, typer.Option(help="file inside the pool")],
    size_gib: Annotated[int, typer.Option(help="virtual size in GiB")] = 1,
    fmt: Annotated[str, typer.Option("--format", help="qcow2 or raw")] = "qcow2",
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Register an image file that lies in a pool."""
    _call(
        _client(url, token),
        "POST",
        "/images",
        json={"name": name, "pool": pool, "path": path, "size_gib": size_gib, "format": fmt},
    )
    out.print(f"image {name}: registered in pool {pool}", highlight=False)


@pool_app.command("list")
def pool_list(url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table") -> None:
    """List storage pools."""
    _emit(
        _call(_client(url, token), "GET", "/pools"), output, ["name", "kind", "path", "nas", "nbd"]
    )


@pool_app.command("create")
def pool_create(
    name: str,
    path: Annotated[str, typer.Option()],
    kind: Annotated[str, typer.Option(help="shared-dir or local-dir")] = "shared-dir",
    nas: Annotated[
        str,
        typer.Option(help="the NAS's addresses, comma-separated: every host pings them"),
    ] = "",
    nbd: Annotated[
        str | None,
        typer.Option(
            help="ADDRESS:PORT of an NBD server exporting the pool's vms/ files: disks are "
            "raw and QEMU opens them over the network"
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Define a directory pool (shared: the same directory mounted on every host)."""
    body = {
        "name": name,
        "path": path,
        "kind": kind,
        "nas": [a for a in nas.split(",") if a],
        "nbd": nbd,
    }
    _call(_client(url, token), "POST", "/pools", json=body)
    out.print(f"pool {name}: defined", highlight=False)


@network_app.command("list")
def network_list(url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table") -> None:
    """List networks."""
    _emit(
        _call(_client(url, token), "GET", "/networks"),
        output,
        ["name", "kind", "bridge", "cidr", "gateway"],
    )


@network_app.command("create")
def network_create(
    name: str,
    bridge: Annotated[str, typer.Option()],
    cidr: Annotated[str | None, typer.Option(help="its subnet, e.g. 198.18.0.0/24")] = None,
    gateway: Annotated[
        str | None, typer.Option(help="its router, inside --cidr: every host pings it")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Define a bridged network (the bridge exists on the hosts that reach it)."""
    body: dict[str, object] = {"name": name, "bridge": bridge}
    if cidr is not None:
        body["cidr"] = cidr
    if gateway is not None:
        body["gateway"] = gateway
    _call(_client(url, token), "POST", "/networks", json=body)
    out.print(f"network {name}: defined", highlight=False)


@task_app.command("list")
def task_list(
    url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table", limit: int = 50
) -> None:
    """List recent tasks."""
    _emit(_call(_client(url, token), "GET", "/tasks", params={"limit": limit}), output, TASK_COLS)


@task_app.command("cancel")
def task_cancel(task_id: str, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Cancel a running migration: the VM stays on its host, untouched."""
    _call(_client(url, token), "POST", f"/tasks/{task_id}/cancel")
    out.print(f"task {task_id}: cancel requested", highlight=False)


@task_app.command("show")
def task_show(
    task_id: str, url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table"
) -> None:
    """Show one task."""
    _emit(
        _call(_client(url, token), "GET", f"/tasks/{task_id}"), output, [*TASK_COLS, "updated_at"]
    )


def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new events")
    ] = False,
    limit: int = 50,
    obj: Annotated[str | None, typer.Option("--object", help="e.g. vm/web1")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    output: JsonOpt = "table",
) -> None:
    """Show the event log (every state change and action, with time, actor and object)."""
    c = _client(url, token)
    params: dict[str, Any] = {"limit": limit}
    if obj:
        params["object"] = obj
    if not follow:
        _emit(
            _call(c, "GET", "/events", params=params),
            output,
            ["time", "actor", "object", "action", "message"],
        )
        return
    params["follow"] = "true"
    try:
        with c.stream("/events", params=params) as r:
            for line in r.iter_lines():
                if not line:
                    continue
                e = json.loads(line)
                if output == "json":
                    print(line, flush=True)
                else:
                    out.print(
                        f"{_fmt(e['time'])}  {e['actor']:<22} {e['object']:<16} "
                        f"{e['action']:<10} {e['message']}",
                        highlight=False,
                    )
    except KeyboardInterrupt:
        return
