"""The ``kumo`` command."""

from __future__ import annotations

import typer

from kumo.cli import lab

app = typer.Typer(
    help="kumo: a private cloud for KVM clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(lab.app, name="lab")
