"""``kumo sim``: run scenario files in the deterministic simulator (docs/simulator.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The deterministic simulator: run scenario files.", no_args_is_help=True)


@app.command("run")
def run(
    files: Annotated[list[Path], typer.Argument(help="scenario YAML files")],
    log: Annotated[bool, typer.Option("--log", help="print each scenario's event log")] = False,
    seed: Annotated[int, typer.Option(help="the world's random seed (MACs, ids)")] = 0,
) -> None:
    """Run each scenario; one line per file, PASS or FAIL with what failed and when. Exits 1
    if any failed (or could not be read)."""
    from kumo.sim.runner import run as run_scenario
    from kumo.sim.scenario import ScenarioError, load

    # the agents' and controllers' warnings are in the event log (--log); not on stderr
    logging.getLogger("kumo").setLevel(logging.CRITICAL)

    failed = 0
    for path in files:
        try:
            scenario = load(path)
        except ScenarioError as exc:
            typer.echo(f"FAIL {path}: {exc}")
            failed += 1
            continue
        result = run_scenario(scenario, seed=seed)
        if log:
            typer.echo(f"# {path}: {scenario.description}")
            for line in result.log:
                typer.echo(line)
        if result.passed:
            typer.echo(f"PASS {path}")
        else:
            failed += 1
            typer.echo(f"FAIL {path}: {result.failures[0]}")
            for more in result.failures[1:]:
                typer.echo(f"     {more}")
    if failed:
        raise typer.Exit(code=1)
