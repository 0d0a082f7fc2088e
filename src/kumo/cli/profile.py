"""`kumo profile …`: install profiles (issue #12): an installer's kernel and initrd, its
kernel arguments and the answer file's template. They talk to the API only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kumo.cli.cluster import JsonOpt, TokenOpt, UrlOpt, _call, _client, _emit, out

app = typer.Typer(
    help="Install profiles: how VMs are installed over the network.", no_args_is_help=True
)

COLUMNS = ["name", "kind", "kernel", "initrd", "args"]


def _variables(pairs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: use NAME=VALUE", param_hint="--var")
        found[key] = value
    return found


@app.command("create")
def create(
    name: str,
    kind: Annotated[str, typer.Option(help="kickstart, preseed or autoinstall")],
    kernel: Annotated[str, typer.Option(help="an image name, or an http(s) URL")],
    initrd: Annotated[str, typer.Option(help="an image name, or an http(s) URL")],
    answer_template: Annotated[
        Path,
        typer.Option(
            help="the answer file's Jinja2 template", exists=True, dir_okay=False, readable=True
        ),
    ],
    arg: Annotated[
        list[str] | None, typer.Option(help="an extra kernel argument (repeat for more)")
    ] = None,
    var: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE given to the template (repeat)")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Define an install profile (its template is checked for its kind)."""
    body = {
        "name": name,
        "kind": kind,
        "kernel": kernel,
        "initrd": initrd,
        "answer_template": answer_template.read_text(),
        "args": arg or [],
        "variables": _variables(var or []),
    }
    _call(_client(url, token), "POST", "/profiles", json=body)
    out.print(f"profile {name}: defined", highlight=False)


@app.command("list")
def list_(url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table") -> None:
    """List install profiles."""
    _emit(_call(_client(url, token), "GET", "/profiles"), output, COLUMNS)


@app.command("show")
def show(name: str, url: UrlOpt = None, token: TokenOpt = None, output: JsonOpt = "table") -> None:
    """One profile, with its template."""
    data = _call(_client(url, token), "GET", f"/profiles/{name}")
    if output == "json":
        _emit(data, output, COLUMNS)
        return
    _emit([data], output, [*COLUMNS, "variables"])
    out.print(data["answer_template"], highlight=False, markup=False)


@app.command("delete")
def delete(name: str, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Delete an install profile."""
    _call(_client(url, token), "DELETE", f"/profiles/{name}")
    out.print(f"profile {name}: deleted", highlight=False)
