"""The CLI prints what the server said as text: brackets in names, messages and paths are not
Rich markup (an event naming ``[/var/lib/kumo/pools/shared/vms/a.qcow2]`` once crashed
``kumo events``)."""

from __future__ import annotations

import pytest
import typer

from kumo.cli.client import ClientError
from kumo.cli.cluster import _emit, _fail

TRICKY = "disk kept [/var/lib/kumo/pools/shared/vms/a.qcow2] and [bold]not bold[/]"


def test_a_table_prints_brackets_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    _emit([{"time": 0.0, "message": TRICKY}], "table", ["message"])
    printed = " ".join(capsys.readouterr().out.split())
    assert "[/var/lib/kumo/pools/shared/vms/a.qcow2]" in printed
    assert "[bold]not bold[/]" in printed


def test_an_error_prints_brackets_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    exit_ = _fail(ClientError(TRICKY))
    assert isinstance(exit_, typer.Exit) and exit_.exit_code == 1
    printed = " ".join(capsys.readouterr().err.split())
    assert printed == f"error: {TRICKY}"
