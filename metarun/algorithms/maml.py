"""MAML: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine 2017, ICML).

Learns an initialisation from which a few SGD steps on a task's support set give low loss on its
query set: ``theta' = theta - alpha * grad L_support(theta)`` (repeated ``inner_steps`` times),
and the outer update descends ``mean_tasks L_query(theta')`` with respect to ``theta``, through
the inner steps (second order) or treating the inner gradients as constants (``first_order``,
FOMAML).

One task is written once, with ``torch.func.grad`` and ``functional_call``, and lifted over the
meta-batch with ``torch.func.vmap``; there is no Python loop over tasks. BatchNorm uses the
statistics of each batch it sees at training and test time (transductive, as in the paper and
its code), via ``BatchStatsNorm``, which keeps second-order gradients under vmap exact.

Paper defaults (Omniglot 5-way): alpha 0.4, 1 inner step in training and 3 at test, 32 tasks per
meta-batch, Adam 1e-3; 20-way: alpha 0.1, 5 steps, 16 tasks; sinusoid: alpha 0.01, 1 step,
25 tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from metarun.algorithms.base import ModelFactory
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec, batched_loss
from metarun.errors import ConfigError
from metarun.models.norm import use_batch_statistics

Params = dict[str, Tensor]


class MAML(nn.Module):
    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        test_inner_steps: int = 3,
        first_order: bool = False,
        meta_batch_size: int = 32,
        train_queries: int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if not inner_lr > 0:
            raise ConfigError("algorithm.inner_lr", f"must be positive, got {inner_lr}")
        for key, value, least in (
            ("inner_steps", inner_steps, 1),
            ("test_inner_steps", test_inner_steps, 0),
            ("meta_batch_size", meta_batch_size, 1),
        ):
            if value < least:
                raise ConfigError(f"algorithm.{key}", f"must be at least {least}, got {value}")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError("algorithm.chunk_size", f"must be null or >= 1, got {chunk_size}")
        self.task = task
        self.model = use_batch_statistics(model(task.input_shape, task.output_size))
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.test_inner_steps = test_inner_steps
        self.first_order = first_order
        self.meta_batch_size = meta_batch_size
        self.train_queries = train_queries
        self.chunk_size = chunk_size

    # Vmapped convolutions with per-task weights run as grouped convolutions, which are slower
    # channels-last on a CPU (scripts/benchmark.py: 0.76-0.92x of contiguous).
    memory_format = torch.contiguous_format

    @property
    def autocast_safe(self) -> bool:
        # Second-order terms (Hessian-vector products) lose their small curvature signal in
        # bf16; first-order MAML only needs ordinary gradients.
        return self.first_order

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        return evaluation.replace(queries=self.train_queries)

    def _forward(self, params: Params, x: Tensor) -> Tensor:
        return functional_call(self.model, params, (x,))

    def _support_loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        return self.task.loss(self._forward(params, x), y)

    def _adapt(self, params: Params, x: Tensor, y: Tensor, steps: int, first_order: bool) -> Params:
        for _ in range(steps):
            grads = grad(self._support_loss)(params, x, y)
            if first_order:
                grads = {name: g.detach() for name, g in grads.items()}
            params = {name: p - self.inner_lr * grads[name] for name, p in params.items()}
        return params

    def _task_predictions(
        self, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, steps: int, first_order: bool
    ) -> Tensor:
        return self._forward(self._adapt(params, sx, sy, steps, first_order), qx)

    def _batched_predictions(
        self, params: Params, batch: EpisodeBatch, steps: int, first_order: bool
    ) -> Tensor:
        one_task = partial(self._task_predictions, steps=steps, first_order=first_order)
        lifted = vmap(one_task, in_dims=(None, 0, 0, 0), chunk_size=self.chunk_size)
        return lifted(params, batch.support_x, batch.support_y, batch.query_x)

    def _trainable(self) -> Params:
        """The parameters the inner loop adapts; frozen ones stay in the module as they are."""
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        params = self._trainable()
        predictions = self._batched_predictions(params, batch, self.inner_steps, self.first_order)
        loss = batched_loss(self.task, predictions, batch.query_y)
        score = self.task.score(predictions.detach(), batch.query_y).mean()
        return loss, {"loss": loss.detach(), self.task.metric: score}

    def _detached_params(self) -> Params:
        return {name: p.detach() for name, p in self._trainable().items()}

    def predict(self, batch: EpisodeBatch) -> Tensor:
        # torch.func.grad differentiates even under an outer torch.no_grad(), which is how
        # evaluation calls this.
        return self._batched_predictions(
            self._detached_params(), batch, self.test_inner_steps, first_order=True
        )

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        if self.task.kind == "classification" and int(support_y.max()) >= self.task.output_size:
            raise ValueError(
                f"this MAML learner has a {self.task.output_size}-way head; a support set with "
                f"{int(support_y.max()) + 1} classes needs a learner trained with that many ways"
            )
        adapted = self._adapt(
            self._detached_params(), support_x, support_y, self.test_inner_steps, first_order=True
        )
        adapted = {name: p.detach() for name, p in adapted.items()}
        return partial(self._forward, adapted)


__all__ = ["MAML"]
