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
meta-batch, Adam 1e-3; 20-way: alpha 0.1, 5 steps (5 at test), 16 tasks; miniImageNet: alpha
0.01, 5 steps (10 at test), 4 tasks, 15 training queries per class; sinusoid: alpha 0.01, 1
step, 25 tasks.

As the authors' code runs them (``cbfinn/maml``, read for these facts):

* The inner loss is ``softmax_cross_entropy / update_batch_size`` per example, differentiated
  as a sum (``utils.py`` ``xent``, ``maml.py`` ``task_metalearn``): the sum of the N*K support
  losses over K, N times the mean. metarun's ``inner_lr`` is the step on the mean, so the
  configs hold the code's alpha x N: 2.0 for Omniglot 5-way (0.4 x 5) and 20-way (0.1 x 20),
  0.05 for miniImageNet (0.01 x 5). The sinusoid's loss is a mean in the code too (0.01).
* BatchNorm is TensorFlow's ``batch_norm`` with batch statistics always, an offset and no
  scale; its offsets are not among the inner loop's ``weights``, so only the outer loop learns
  them (``adapt_norm=False``).
* The networks per data set (stride-2 convolutions and a spatial mean on Omniglot, 32 filters
  and max-pooling on miniImageNet, Glorot initialisation) are ``configs/network/maml_*``, the
  ``Conv4`` options explained in ``metarun.models.conv4``.
* Departures, kept for metarun's shared protocol: the Lake alphabet split rather than a random
  character split, no test-time rotations, 15 test queries per class rather than K, the best
  validation checkpoint rather than the last. miniImageNet's per-entry meta-gradient clip at
  10 of the code's summed outer loss is ``trainer.grad_clip_value`` in
  ``configs/paper/maml_mini_imagenet.yaml``, scaled to metarun's mean loss.
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
        self, model: ModelFactory, task: TaskSpec, inner_lr: float = 2.0, **inner_loop: Any
    ) -> None:
        """``inner_loop``: the family's keys (``GradientLearner``: inner_steps,
        test_inner_steps, first_order, meta_batch_size, ...), MAML's defaults unless given."""
        self.inner_lr = check_positive("inner_lr", inner_lr)
        super().__init__(model, task, **inner_loop)

    def build_rule(self, params: Params) -> UpdateRule:
        return SGDStep(self.inner_lr)


__all__ = ["MAML"]
