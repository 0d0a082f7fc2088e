"""The import-cycle check that ``scripts/check`` runs (``scripts/import_cycles.py``) fails,
naming the cycle, when modules of a package import each other in a cycle (directly, through
other modules, or only for type checking), and passes on kumo as it is."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "import_cycles.py"


def check(tmp_path: Path, modules: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the check on package ``pkg`` made of ``modules`` (name -> source) in tmp_path."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, source in modules.items():
        (pkg / f"{name}.py").write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "pkg"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_acyclic_package_passes(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        {
            "state": "X = 1\n",
            "queries": "from pkg.state import X\n",
            "commands": "from pkg import queries, state\n",
        },
    )
    assert result.returncode == 0, result.stdout
    assert result.stdout == "no import cycles in pkg\n"


def test_a_cycle_through_a_third_module_is_named(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        {
            "a": "from pkg import b\n",
            "b": "import pkg.c\n",
            "c": "def f() -> None:\n    from pkg.a import f\n",  # inside a function: counts
            "d": "from pkg import a\n",  # imports the cycle, is not part of it
        },
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "import cycle: pkg.a -> pkg.b -> pkg.c -> pkg.a",
        "1 import cycle(s) in pkg; break each (see docs/architecture.md)",
    ]


def test_a_type_checking_import_closes_a_cycle(tmp_path: Path) -> None:
    # The shape service.py and migrations.py had: one side names the other only for types.
    result = check(
        tmp_path,
        {
            "service": "from pkg.migrations import Migrations\n",
            "migrations": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg.service import Service
                class Migrations: ...
            """,
        },
    )
    assert result.returncode == 1
    assert "import cycle: pkg.migrations -> pkg.service -> pkg.migrations" in result.stdout


def test_kumo_has_no_import_cycle() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout
