"""Using a trained learner from Python: ``metarun.load``.

    learner = metarun.load("outputs/runs/<run>")        # or a .pt checkpoint
    x = torch.stack([learner.preprocess(img) for img in pil_images])
    classify = learner.adapt(support_x, support_y)       # any integer labels
    labels = classify(query_x)                           # in the same label space

The learner is rebuilt from the config stored in the checkpoint; the data set itself is not
needed, only its description (image size, channels, task kind).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from metarun.data.task import TaskSpec
from metarun.training.checkpoint import load_checkpoint


class AdaptedLearner:
    """A learner adapted to one task's support set."""

    def __init__(
        self, predict: Callable[[Tensor], Tensor], classes: Tensor | None, device: torch.device
    ) -> None:
        self._predict = predict
        self.classes = classes
        self.device = device

    @torch.no_grad()
    def logits(self, query_x: Tensor) -> Tensor:
        """Raw outputs: class scores ``[n, ways]`` (columns follow ``classes``), or regression
        values."""
        return self._predict(query_x.to(self.device)).cpu()

    def __call__(self, query_x: Tensor) -> Tensor:
        """Predicted labels (from the support set's label space), or regression values."""
        outputs = self.logits(query_x)
        if self.classes is None:
            return outputs
        # A fixed-size head (MAML) may have more outputs than this task has classes.
        return self.classes[outputs[..., : len(self.classes)].argmax(-1)]


class FewShotLearner:
    def __init__(self, learner: Any, data: Any, config: dict[str, Any], device: torch.device):
        self.learner = learner
        self.data = data
        self.config = config
        self.device = device

    @property
    def task(self) -> TaskSpec:
        return self.data.task

    def preprocess(self, raw: Any) -> Tensor:
        """A raw input (a PIL image for image data sets) as the tensor the model expects."""
        return self.data.preprocess(raw)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> AdaptedLearner:
        """Adapt to a new task given its labelled support set ``[n, ...]``, ``[n]``."""
        classes = None
        targets = support_y
        if self.task.kind == "classification":
            classes, targets = torch.unique(support_y, sorted=True, return_inverse=True)
        predict = self.learner.adapt(support_x.to(self.device), targets.to(self.device))
        return AdaptedLearner(predict, classes, self.device)


def checkpoint_path(path: str | Path) -> Path:
    path = Path(path)
    return path / "checkpoints" / "best.pt" if path.is_dir() else path


def load(path: str | Path, device: str | torch.device = "cpu") -> FewShotLearner:
    """The trained learner of a run directory (its best checkpoint) or of a ``.pt`` file."""
    from metarun.run import build  # run.py builds learners the same way for training

    state = load_checkpoint(checkpoint_path(path))
    cfg = OmegaConf.create(state["config"])
    data = build(cfg, "dataset")
    if hasattr(data, "load_state_dict"):  # normalisation measured on the training data
        data.load_state_dict(state.get("data", {}))
    learner = build(cfg, "algorithm", model=build(cfg, "model"), task=data.task)
    learner.load_state_dict(state["learner"])
    device = torch.device(device)
    learner.to(device).eval()
    return FewShotLearner(learner, data, state["config"], device)
