"""``metrics.jsonl``: one JSON object per logged step, readable without W&B.

On resume, lines past the checkpoint's step are dropped first: they were written by the part of
the run that is about to be redone, and keeping them would log those steps twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from metarun.atomic import atomic_write_text


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a metrics file, skipping a torn last line from a crash."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsFile:
    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        else:
            atomic_write_text(path, "")

    def log(self, metrics: dict[str, float], step: int) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def image(self, name: str, png: bytes, step: int) -> None:
        pass

    def checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        pass

    def table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        pass

    def preempting(self) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity; write them as null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
