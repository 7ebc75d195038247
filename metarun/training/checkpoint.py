"""Checkpoints: plain tensors and Python values only, written atomically.

``last.pt`` holds everything needed to continue bit for bit (learner, optimiser, scheduler, step,
best score, every RNG state including the episode sampler's, the resolved config and the W&B
run id). ``best.pt`` is a byte copy of a finished ``last.pt``. Both load with
``torch.load(weights_only=True)``, so reading a checkpoint never runs pickled code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metarun.atomic import atomic_copy, atomic_torch_save
from metarun.errors import CheckpointError

FORMAT = "metarun-checkpoint"
VERSION = 1


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_torch_save({"format": FORMAT, "version": VERSION, **state}, path)


def checkpoint_path(path: str | Path) -> Path:
    """A run directory's best checkpoint, or the ``.pt`` file given."""
    path = Path(path)
    return path / "checkpoints" / "best.pt" if path.is_dir() else path


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({reason[:200]}); it is truncated or not a "
            f"metarun checkpoint: use another run's checkpoint or start a fresh run"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a metarun checkpoint")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer metarun (format {state['version']}); upgrade metarun"
        )
    return state


class Checkpoints:
    """The two checkpoints of a run directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.last = directory / "last.pt"
        self.best = directory / "best.pt"

    def save(self, state: dict[str, Any], best: bool) -> None:
        save_checkpoint(state, self.last)
        if best:
            atomic_copy(self.last, self.best)
