"""``figures/`` in the run directory: every picture a run logs, as a PNG file per step and the
latest one under its plain name, so a run can be looked at without W&B."""

from __future__ import annotations

from pathlib import Path

from metarun.atomic import atomic_write_bytes
from metarun.pictures import file_stem
from metarun.tracking.null import NullLogger


class FigureFiles(NullLogger):
    """Keeps pictures only; every other logging call is the null logger's."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def image(self, name: str, png: bytes, step: int) -> None:
        stem = file_stem(name)
        atomic_write_bytes(self.directory / f"{stem}_step{step:07d}.png", png)
        atomic_write_bytes(self.directory / f"{stem}.png", png)
