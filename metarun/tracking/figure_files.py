"""``figures/`` in the run directory: every picture a run logs, as a PNG file per step and the
latest one under its plain name, so a run can be looked at without W&B."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from metarun.atomic import atomic_write_bytes


def file_stem(name: str) -> str:
    """``val/samples`` -> ``val_samples``: W&B's key as a file name."""
    return re.sub(r"[^\w.-]", "_", name)


class FigureFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def image(self, name: str, png: bytes, step: int) -> None:
        stem = file_stem(name)
        atomic_write_bytes(self.directory / f"{stem}_step{step:07d}.png", png)
        atomic_write_bytes(self.directory / f"{stem}.png", png)

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        pass

    def preempting(self) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass
