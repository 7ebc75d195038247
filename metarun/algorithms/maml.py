"""MAML: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine 2017, ICML).

Learns an initialisation from which a few SGD steps on a task's support set give low loss on its
query set: ``theta' = theta - alpha * grad L_support(theta)`` (repeated ``inner_steps`` times),
and the outer update descends ``mean_tasks L_query(theta')`` with respect to ``theta``, through
the inner steps (second order) or treating the inner gradients as constants (``first_order``,
FOMAML).

The inner loop is the family's functional core (``metarun.algorithms.gradient``): one task's step
is written with ``torch.func.grad`` and ``functional_call`` and lifted over the meta-batch with
``torch.func.vmap``; there is no Python loop over tasks. BatchNorm uses the statistics of each
batch it sees at training and test time (``batch_norm: transductive``, as in the paper and its
code), via ``BatchStatsNorm``, which keeps second-order gradients under vmap exact.

Paper defaults (Omniglot 5-way): alpha 0.4, 1 inner step in training and 3 at test, 32 tasks per
meta-batch, Adam 1e-3; 20-way: alpha 0.1, 5 steps, 16 tasks; sinusoid: alpha 0.01, 1 step,
25 tasks.
"""

from __future__ import annotations

from typing import Any

from metarun.algorithms.base import ModelFactory
from metarun.algorithms.gradient import (
    GradientLearner,
    Params,
    SGDStep,
    UpdateRule,
    check_positive,
)
from metarun.data.task import TaskSpec


class MAML(GradientLearner):
    def __init__(
        self, model: ModelFactory, task: TaskSpec, inner_lr: float = 0.4, **inner_loop: Any
    ) -> None:
        """``inner_loop``: the family's keys (``GradientLearner``: inner_steps,
        test_inner_steps, first_order, meta_batch_size, ...), MAML's defaults unless given."""
        self.inner_lr = check_positive("inner_lr", inner_lr)
        super().__init__(model, task, **inner_loop)

    def build_rule(self, params: Params) -> UpdateRule:
        return SGDStep(self.inner_lr)


__all__ = ["MAML"]
