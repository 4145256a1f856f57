"""`make lint` in the test suite, so CI keeps the code clean: ruff's lint and format, and mypy.

Pure: no engine. The tools are the pinned ones of the CPU lock, next to the test's Python;
their settings are in pyproject.toml (mypy checks `src/`, with a cache in `.mypy_cache/`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_lint_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=ROOT,
        capture_output=True,
        timeout=600,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
