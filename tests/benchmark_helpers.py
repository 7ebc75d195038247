"""What the tests of scripts/benchmarks/ share: running one as a command, reading its table,
and standing in for its child processes."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from script_modules import BENCHMARKS


def run_benchmark(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python scripts/benchmarks/<name>.py ARGS`` from ``cwd``, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def table_rows(stdout: str, first_column: str = "algorithm") -> list[list[str]]:
    """A table's rows, split on the two-space column gaps."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_column + " "))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def yaml_case_result(seconds: float) -> dict:
    """What a child of family.py or learners.py returns for a 5-way 1-shot 1-query case of 2
    tasks whose one repeat took ``seconds``, using 1 MiB."""
    return {"seconds": [seconds], "peak_bytes": 1024 * 1024, "tasks": 2, "episode": [5, 1, 1]}


def stand_in_children(
    monkeypatch: pytest.MonkeyPatch, timing: ModuleType, result: Callable[[object], dict]
) -> list[str]:
    """Cases meant for child processes get ``result(case)`` instead; the list that comes back
    fills with the script each child would have run."""
    scripts: list[str] = []

    def child(case: object, script: str, device: object, repeats: int, threads: int) -> dict:
        scripts.append(str(Path(script).resolve()))
        return result(case)

    monkeypatch.setattr(timing, "run_case_in_child", child)
    return scripts
