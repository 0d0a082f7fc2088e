"""Every scenario file under tests/scenarios/ runs in the simulator and passes: its
expectations and the invariants of the scenario format (docs/simulator.md). The scenarios
that need what is not built yet are expected to fail, strictly and each with its reason: one
that passes fails here, so its marker goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kumo.sim.runner import Result, run
from kumo.sim.scenario import load

ROOT = Path(__file__).resolve().parents[1] / "scenarios"
FILES = sorted(ROOT.rglob("*.yaml"))

# scenarios whose expectations need what is not built yet (relative to ROOT), and why
NOT_YET: dict[str, str] = {}


def _param(path: Path) -> object:
    rel = path.relative_to(ROOT).as_posix()
    if rel in NOT_YET:
        mark = pytest.mark.xfail(strict=True, reason=NOT_YET[rel])
        return pytest.param(path, id=rel, marks=mark)
    return pytest.param(path, id=rel)


def explain(result: Result) -> str:
    failures = "\n".join(str(f) for f in result.failures)
    return f"{result.scenario.path}:\n{failures}\n--- log (last 40 lines)\n" + "\n".join(
        result.log[-40:]
    )


def test_there_are_at_least_40_scenarios() -> None:
    assert len(FILES) >= 40
    assert not set(NOT_YET) - {p.relative_to(ROOT).as_posix() for p in FILES}


@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_scenario(path: Path) -> None:
    result = run(load(path))
    assert result.passed, explain(result)


@pytest.mark.parametrize(
    "name",
    [
        "maintenance-enter-exit.yaml",
        "vm-crash.yaml",
        "leader-crash.yaml",
        "ha/recovery-power-off.yaml",
    ],
)
def test_a_scenario_gives_the_same_log_byte_for_byte(name: str) -> None:
    first, second = run(load(ROOT / name)), run(load(ROOT / name))
    assert len(first.log) > 2
    assert "\n".join(first.log) == "\n".join(second.log)
