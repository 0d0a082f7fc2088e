"""The import contracts in pyproject (``[tool.importlinter]``, run by ``scripts/check``) fail
on a pure module that imports a clock, randomness or I/O, directly or through another module.

Each case runs ``lint-imports`` on a copy of the package with one import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kumo

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    pkg = Path(kumo.__file__).parent
    shutil.copytree(pkg, tmp_path / "kumo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    if line:
        path = tmp_path / (module.replace(".", "/") + ".py")
        path.write_text(path.read_text() + f"\n{line}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [str(LINT), "--no-cache", "--no-logo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_tree_as_it_is_keeps_the_contracts(tmp_path: Path) -> None:
    result = lint(tmp_path, "", "")
    assert result.returncode == 0, result.stdout
    assert ", 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "forbidden", "chain"),
    [
        ("kumo.scheduler.placement", "import time", "time", "kumo.scheduler.placement -> time"),
        ("kumo.model.vm", "import os", "os", "kumo.model.vm -> os"),
        ("kumo.agent.decide", "import secrets", "secrets", "kumo.agent.decide -> secrets"),
        (
            "kumo.server.macs",
            "from kumo.store import etcd",
            "kumo.store.etcd",
            "kumo.server.macs -> kumo.store.etcd",
        ),
        # indirectly, through an effectful module that reads the clock
        (
            "kumo.agent.strategy",
            "import kumo.store.activity",
            "time",
            "kumo.agent.strategy -> kumo.store.activity",
        ),
        # the migrator sees the agent through a protocol: no import cycle
        (
            "kumo.agent.migrator",
            "import kumo.agent.agent",
            "kumo.agent.agent",
            "kumo.agent.migrator -> kumo.agent.agent",
        ),
        ("kumo.faults", "import time", "time", "kumo.faults -> time"),
        ("kumo.sim.clock", "import time", "time", "kumo.sim.clock -> time"),
        ("kumo.sim.invariants", "import random", "random", "kumo.sim.invariants -> random"),
        (
            "kumo.sim.world",
            "from kumo.server import schemas",
            "kumo.server.schemas",
            "kumo.sim.world -> kumo.server.schemas",
        ),
    ],
)
def test_a_pure_module_importing_the_world_breaks_the_contract(
    tmp_path: Path, module: str, line: str, forbidden: str, chain: str
) -> None:
    result = lint(tmp_path, module, line)
    assert result.returncode == 1, result.stdout
    assert ", 1 broken" in result.stdout
    assert f"is not allowed to import {forbidden}:" in result.stdout
    assert chain in result.stdout
