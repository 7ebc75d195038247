"""Meta-SGD (Li, Zhou, Chen & Li 2017, arXiv:1707.09835, "Meta-SGD: Learning to Learn Quickly
for Few-Shot Learning").

MAML with a learned inner step: besides the initialisation ``theta``, Meta-SGD meta-learns a
tensor ``alpha`` of the same shape as ``theta`` and adapts with
``theta' = theta - alpha * grad L_support(theta)`` (elementwise product). ``alpha`` is both a
per-parameter learning rate and an update direction: entries may turn negative, and the paper
leaves them unconstrained. ``theta`` and ``alpha`` are trained together by the outer optimiser
on the query loss of the adapted weights, through the inner gradient (second order).

The inner loop is the family's shared core (``metarun.algorithms.gradient``); Meta-SGD only
contributes its ``UpdateRule``, ``LearnedRates``. The rates are submodule parameters, so
``state_dict``, checkpoints and the outer optimiser include them without further code.

Paper defaults: one inner step, in meta-training and at test ("adapt ... in just one step");
``alpha`` initialised uniformly at random in [0.005, 0.1]; the Conv-4 learner and episode
set-up of MAML, against which it is compared. Meta-batch and outer optimiser here follow MAML's
Omniglot 5-way settings (32 tasks, Adam 1e-3).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory
from metarun.algorithms.gradient import GradientLearner, Params, State, UpdateRule
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError


def rate_key(name: str) -> str:
    """``nn.ParameterDict`` keys cannot contain dots; parameter names do."""
    return name.replace(".", "__")


class LearnedRates(UpdateRule):
    """``w - alpha_w * grad_w`` with one meta-learned rate per weight entry."""

    def __init__(self, params: Params, low: float = 0.005, high: float = 0.1) -> None:
        super().__init__()
        self.low, self.high = low, high
        self.alpha = nn.ParameterDict(
            {
                rate_key(name): nn.Parameter(torch.empty_like(p).uniform_(low, high))
                for name, p in params.items()
            }
        )

    def rate(self, name: str) -> Tensor:
        return self.alpha[rate_key(name)]

    def forward(
        self, step: int, params: Params, grads: Params, loss: Tensor, state: State
    ) -> tuple[Params, State]:
        return {n: p - self.rate(n) * grads[n] for n, p in params.items()}, state

    def extra_repr(self) -> str:
        return f"init=uniform[{self.low}, {self.high}]"


class MetaSGD(GradientLearner):
    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        init_lr_range: tuple[float, float] = (0.005, 0.1),
        **inner_loop: Any,
    ) -> None:
        """``inner_loop``: the family's keys (``GradientLearner``); one step by default."""
        bounds = [float(v) for v in init_lr_range]
        if len(bounds) != 2 or not bounds[0] <= bounds[1]:
            raise ConfigError(
                "algorithm.init_lr_range",
                f"must be [low, high] with low <= high, got {list(init_lr_range)}",
            )
        self.init_lr_range = (bounds[0], bounds[1])
        inner_loop.setdefault("test_inner_steps", 1)  # the paper adapts in one step
        super().__init__(model, task, **inner_loop)

    def build_rule(self, params: Params) -> UpdateRule:
        return LearnedRates(params, *self.init_lr_range)


__all__ = ["LearnedRates", "MetaSGD"]
