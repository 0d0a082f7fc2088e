"""Running commands for the lab, in the root namespace or inside a lab node.

Every failure becomes a :class:`LabError` naming the command and what it printed, so the
operator sees which component failed and why.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence


class LabError(Exception):
    """A lab operation failed; the message says what and why, for a person."""


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = 120,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``args``; with ``check`` a non-zero exit raises :class:`LabError`."""
    try:
        proc = subprocess.run(
            list(args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{args[0]}: not installed (run scripts/setup)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{shlex.join(args)}` did not finish within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"`{shlex.join(args)}` failed (exit {proc.returncode}): {detail}")
    return proc
