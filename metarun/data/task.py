"""What a data set asks a learner to do, and how its answers are scored.

A ``TaskSpec`` is the contract between data, model and algorithm: the input shape the model
receives, how many outputs it must produce, the training loss, and the per-episode score that
validation and test report (accuracy in percent for classification, mean squared error for
regression, the total return of a trial for ``control``: tasks you act in, whose input is the
observation and whose outputs are the actions, scored by playing them, ``metarun.envs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from metarun.models.gaussian_policy import gaussian_log_prob

TaskKind = Literal["classification", "regression", "control"]
METRICS = {"classification": "acc", "regression": "mse", "control": "return"}


@dataclass(frozen=True)
class TaskSpec:
    kind: TaskKind
    input_shape: tuple[int, ...]
    output_size: int
    continuous_actions: bool = False  # control only: actions are vectors of output_size

    @property
    def metric(self) -> str:
        return METRICS[self.kind]

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "regression"

    def loss(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """Mean loss over a set of examples; ``predictions`` are ``[n, outputs]``. For
        ``control`` the examples are steps a policy took: ``predictions`` its Gaussian at each
        (``metarun.models.gaussian_policy``), ``targets`` the action taken and that step's
        weight (its advantage), ``[n, actions + 1]``, and the loss is the policy-gradient
        surrogate ``-mean(log pi(a | s) * weight)`` (what the gradient family's inner loop
        descends on a task's rollouts, ``metarun.algorithms.policy_search``)."""
        if self.kind == "classification":
            return F.cross_entropy(predictions, targets)
        if self.kind == "control":
            if not self.continuous_actions:
                raise ValueError("the policy-gradient loss is defined for continuous actions")
            actions, weights = targets[..., :-1], targets[..., -1]
            return -(gaussian_log_prob(predictions, actions) * weights).mean()
        return F.mse_loss(predictions, targets)

    def score(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """One score per episode from ``[B, n, outputs]`` predictions: acc in % or MSE."""
        if self.kind == "classification":
            return (predictions.argmax(-1) == targets).float().mean(-1) * 100.0
        return ((predictions - targets) ** 2).flatten(1).mean(-1)

    def is_better(self, candidate: float, incumbent: float | None) -> bool:
        if incumbent is None:
            return True
        return candidate > incumbent if self.higher_is_better else candidate < incumbent


def batched_loss(task: TaskSpec, predictions: Tensor, targets: Tensor) -> Tensor:
    """Mean loss over a meta-batch: ``predictions`` are ``[B, n, outputs]``."""
    return task.loss(predictions.flatten(0, 1), targets.flatten(0, 1))


__all__ = ["TaskKind", "TaskSpec", "batched_loss"]
