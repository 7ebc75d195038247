"""MAML++ (Antoniou, Edwards & Storkey 2019, ICLR, "How to train your MAML").

MAML with the paper's fixes for its instability and cost, each a switch of its own so that an
ablation is one override:

* MSL, multi-step loss (``msl``): the outer loss is a weighted sum of the query losses after
  every inner step, with weights annealed towards the last step over ``msl_anneal_steps``
  meta-steps; afterwards only the last step's loss counts (``multi_step_loss_weights``).
* BNRS, per-step BatchNorm running statistics (``batch_norm: per_step``).
* BNWB, per-step BatchNorm weights and biases (``per_step_bn_weights``): shape ``[steps, C]``.
* At test, ``bn_test_statistics``: ``batch`` (the default: the test batch's own statistics, as
  the authors' released code normalises) or ``running`` (the per-step running statistics, as
  the paper's text describes); see ``PerStepBatchNorm`` for why the default is the code's.
* LSLR, learned per-layer per-step inner learning rates (``lslr``): one learnable rate per
  adapted tensor and step (``LSLRStep``), initialised to ``inner_lr``; off, a fixed SGD rate.
* DA, derivative-order annealing (``first_order_steps``): first-order meta-gradients for that
  many meta-steps, second order afterwards.
* CA, cosine annealing of the meta learning rate: the optimiser config ``adam_cosine``, which
  ``configs/algorithm/mamlpp.yaml`` selects (``optimizer=adam`` turns it off).

The schedules (MSL, DA) follow from the meta-step alone, set by ``start_step`` (the trainer
calls it before each meta-step), so a resumed run continues them. With ``msl``, ``lslr``,
``per_step_bn_weights`` and DA off and ``batch_norm: transductive``, MAML++ is MAML.

MSL schedule, as in the authors' code (``get_per_step_loss_importance_vector`` in
AntreasAntoniou/HowToTrainYourMAMLPytorch): with ``S`` inner steps and annealing progress
``t = (meta-step - 1) / msl_anneal_steps`` (the code counts epochs; metarun counts meta-steps),
every step but the last weighs ``max((1 - t) / S, 0.03 / S)`` and the last
``min((1 + (S - 1) t) / S, 1 - 0.03 (S - 1) / S)``: uniform at the start, summing to one
throughout; from ``t = 1`` the last step's loss alone is optimised.

The authors' code (``AntreasAntoniou/HowToTrainYourMAMLPytorch``, read for these facts):
configs ``experiment_config/omniglot_maml++-omniglot_*.json`` (earlier
``omniglot_maml++_omniglot_{5,20}_way_{1,5}_shot_maml_{0,1,2}.json``), networks in
``meta_neural_network_architectures.py``, the loop in ``few_shot_learning_system.py``. Omniglot:
5 inner steps in training and at test, inner rate 0.1 (LSLR initialisation), 16 tasks per
meta-batch (8 in the configs since May 2019), 1 query per class, Conv-4 with 64 filters, leaky
ReLU, Xavier initialisation and per-step BatchNorm whose weights stay out of the inner loop,
batch statistics at test, Adam 1e-3 cosine-annealed to 1e-5, 100 epochs of 500 updates
(50,000), MSL annealed over 10 epochs (5000 updates), second order from the first update
(``first_order_to_second_order_epoch: -1``). ``configs/paper/mamlpp_omniglot.yaml`` and
``configs/network/mamlpp_omniglot_conv4.yaml`` set these. The YAML's own defaults
(``msl_anneal_steps`` 10000, ``first_order_steps`` 25000, the paper's derivative-order annealing)
apply to data sets the code has no config for. miniImageNet: 48 filters, 2 tasks, 15 queries,
MSL over 15 epochs, no learning-rate decay (``configs/paper/mamlpp_mini_imagenet.yaml``).
Departures: the test uses the best validation checkpoint, not the code's ensemble of the five
best epochs; no gradient clamping on miniImageNet.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory
from metarun.algorithms.episode_ways import answers_episode_ways
from metarun.algorithms.gradient import (
    GradientLearner,
    Params,
    SGDStep,
    State,
    UpdateRule,
    check_positive,
)
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models.norm import apply_batch_norm

MIN_NON_FINAL_FRACTION = 0.03
"""The authors' floor on each non-final step's weight, as a fraction of ``1 / steps``."""


def multi_step_loss_weights(step: int, inner_steps: int, anneal_steps: int) -> Tensor | None:
    """The MSL weights of the query losses after each inner step at meta-step ``step``
    (1-based), or None once annealing is over (the last step's loss only)."""
    done = step - 1
    if done >= anneal_steps:
        return None
    s = inner_steps
    t = done / anneal_steps
    floor = MIN_NON_FINAL_FRACTION / s
    non_final = max((1.0 - t) / s, floor)
    final = min((1.0 + (s - 1) * t) / s, 1.0 - (s - 1) * floor)
    return torch.tensor([non_final] * (s - 1) + [final], dtype=torch.float64)


class LSLRStep(UpdateRule):
    """``w - rate[step] * grad`` with a learnable rate per adapted tensor and inner step
    (MAML++'s LSLR): the outer optimiser learns how far each layer moves at each step."""

    def __init__(self, params: Params, steps: int, lr: float) -> None:
        super().__init__()
        # Parameter names hold dots, which module keys may not; identifiers never hold "-".
        self.rates = nn.ParameterDict(
            {_key(name): nn.Parameter(torch.full((steps,), float(lr))) for name in params}
        )

    def rate(self, name: str) -> Tensor:
        return self.rates[_key(name)]

    def forward(
        self, step: int, params: Params, grads: Params, loss: Tensor, state: State
    ) -> tuple[Params, State]:
        return {name: p - self.rate(name)[step] * grads[name] for name, p in params.items()}, state


def _key(name: str) -> str:
    return name.replace(".", "-")


class MAMLPlusPlus(GradientLearner):
    acts_in_tasks = False  # its multi-step loss and per-step BatchNorm are a query set's

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        inner_lr: float = 0.1,
        inner_steps: int = 5,
        test_inner_steps: int = 5,
        batch_norm: str = "per_step",
        msl: bool = True,
        msl_anneal_steps: int = 10000,
        per_step_bn_weights: bool = True,
        bn_test_statistics: str = "batch",
        lslr: bool = True,
        first_order_steps: int = 25000,
        **inner_loop: Any,
    ) -> None:
        """``inner_loop``: the family's other keys (``GradientLearner``)."""
        check_positive("inner_lr", inner_lr)
        if msl_anneal_steps < 1:
            raise ConfigError(
                "algorithm.msl_anneal_steps",
                f"must be at least 1 (algorithm.msl=false turns MSL off), got {msl_anneal_steps}",
            )
        if first_order_steps < 0:
            raise ConfigError(
                "algorithm.first_order_steps", f"must be 0 or more, got {first_order_steps}"
            )
        if per_step_bn_weights and batch_norm != "per_step":
            raise ConfigError(
                "algorithm.per_step_bn_weights",
                f"needs algorithm.batch_norm=per_step (got {batch_norm!r}); or set it false",
            )
        if lslr and test_inner_steps > inner_steps:
            raise ConfigError(
                "algorithm.test_inner_steps",
                f"LSLR learns rates for the {inner_steps} training steps; use at most "
                f"{inner_steps} test steps, or algorithm.lslr=false",
            )
        self.inner_lr = inner_lr
        self.msl = msl
        self.msl_anneal_steps = msl_anneal_steps
        self.per_step_bn_weights = per_step_bn_weights
        if bn_test_statistics not in ("batch", "running"):
            raise ConfigError(
                "algorithm.bn_test_statistics",
                f"must be batch or running, got {bn_test_statistics!r}",
            )
        self.bn_test_statistics = bn_test_statistics
        self.lslr = lslr
        self.first_order_steps = first_order_steps
        self.meta_step = 1  # as at the first meta-step until the trainer says otherwise
        super().__init__(
            model,
            task,
            inner_steps=inner_steps,
            test_inner_steps=test_inner_steps,
            batch_norm=batch_norm,
            **inner_loop,
        )

    # -- Scheduled -------------------------------------------------------------------------
    def start_step(self, step: int, max_steps: int) -> None:
        self.meta_step = step

    # -- hooks -----------------------------------------------------------------------------
    def build_model(self, model: ModelFactory) -> nn.Module:
        network = model(self.task.input_shape, self.task.output_size)
        return apply_batch_norm(
            network,
            self.batch_norm,
            self.inner_steps,
            per_step_affine=self.per_step_bn_weights,
            test_statistics=self.bn_test_statistics,
        )

    def build_rule(self, params: Params) -> UpdateRule:
        if self.lslr:
            return LSLRStep(params, self.inner_steps, self.inner_lr)
        return SGDStep(self.inner_lr)

    def step_loss_weights(self) -> Tensor | None:
        if not self.msl:
            return None
        return multi_step_loss_weights(self.meta_step, self.inner_steps, self.msl_anneal_steps)

    @property
    def second_order(self) -> bool:
        return not self.first_order and self.meta_step > self.first_order_steps

    @answers_episode_ways
    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        loss, metrics = super().meta_loss(batch)
        # Where the schedules stand, logged with the loss (the authors' code logs the MSL
        # weights too): the last step's weight, and 1 once second order is on.
        weights = self.step_loss_weights()
        final = 1.0 if weights is None else float(weights[-1])
        metrics["msl_final_weight"] = torch.tensor(final, device=loss.device)
        metrics["second_order"] = torch.tensor(float(self.second_order), device=loss.device)
        return loss, metrics


__all__ = ["LSLRStep", "MAMLPlusPlus", "multi_step_loss_weights"]
