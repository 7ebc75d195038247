"""The functional core of the optimisation-based family (MAML, ANIL, Meta-SGD, MAML++,
Meta-LSTM): adapt a network to each task with a few gradient steps on its support set, score the
adapted network on its query set, and differentiate that score with respect to everything that
was meta-learned.

What differs between the members is small, so each is a hook here rather than a copy of the loop:

* ``build_rule``: how an inner step turns a gradient into new weights (``UpdateRule``): plain
  SGD (MAML, ANIL), learned per-parameter rates (Meta-SGD), per-layer per-step rates (MAML++),
  an LSTM (Meta-LSTM). A new learned optimiser is one ``UpdateRule`` subclass in one file.
* ``inner_parameters``: which weights the inner loop adapts (all of them; ANIL: the head).
* ``step_loss_weights``: the query loss of the final step only, or a weighted sum over steps
  (MAML++'s multi-step loss).
* ``second_order``: whether the meta-gradient goes through the inner gradients (MAML++ anneals
  this over training, via ``start_step``).

One inner step is written for one task with ``torch.func.grad`` and ``functional_call`` and lifted
over the meta-batch with ``torch.func.vmap``; the steps themselves are a Python loop outside the
vmap, each one a vmapped call on ``[tasks, ...]`` weights. That shape is what makes
``checkpoint_steps`` possible: each step can be recomputed during backward (reentrant
``torch.utils.checkpoint`` cannot run inside a vmap), so second-order memory stops growing with
the number of inner steps, for the price of one more forward pass of the inner loop.

BatchNorm is one key for the whole family (``batch_norm``): ``transductive`` (statistics of the
batch at hand, in training and at test, as MAML reports), ``per_step`` (running statistics kept
per inner step and used at test, as in MAML++), or ``none`` (no normalisation layers).

On tasks you act in (``dataset=point_nav``) the support and query sets are rollouts and the
loss is the policy gradient's surrogate: ``metarun.algorithms.policy_search`` (MAML-RL), mixed
in here, so MAML, Meta-SGD and ANIL act through the same hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils import checkpoint as torch_checkpoint
from torch.utils._pytree import tree_flatten, tree_unflatten

from metarun.algorithms.base import ModelFactory
from metarun.algorithms.episode_ways import (
    adapts_to_support_ways,
    answers_episode_ways,
    head_of,
)
from metarun.algorithms.policy_search import PolicySearch
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec, batched_loss
from metarun.errors import ConfigError
from metarun.models.gaussian_policy import GaussianPolicy
from metarun.models.norm import (
    BATCH_NORM_MODES,
    NORMALISATION_LAYERS,
    StepIndexed,
    apply_batch_norm,
)
from metarun.randomness import fold, noise_for, stream

Params = dict[str, Tensor]
State = dict[str, Tensor]
Stats = dict[str, tuple[Tensor, Tensor]]  # BatchNorm layer name -> (mean, unbiased variance)


class UpdateRule(nn.Module):
    """One inner step for one task: ``(step, weights, gradients, support loss, state)`` to new
    weights and state. Rules run inside ``vmap``, so they see one task's tensors; ``state`` (e.g.
    Meta-LSTM's previous gates) is per task and starts from ``init_state`` of the meta-batch's
    ``[tasks, ...]`` weights. Learnable tensors of a rule are meta-parameters: the rule is a
    submodule of the learner, so the outer optimiser trains them."""

    def init_state(self, params: Params) -> State:
        return {}

    def forward(
        self, step: int, params: Params, grads: Params, loss: Tensor, state: State
    ) -> tuple[Params, State]:
        raise NotImplementedError


class SGDStep(UpdateRule):
    """``w - lr * grad``: MAML's and ANIL's inner step."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr

    def forward(
        self, step: int, params: Params, grads: Params, loss: Tensor, state: State
    ) -> tuple[Params, State]:
        return {name: p - self.lr * grads[name] for name, p in params.items()}, state

    def extra_repr(self) -> str:
        return f"lr={self.lr}"


def checkpointed(
    function: Callable[..., tuple], params: Params, x: Tensor, y: Tensor, state: State
) -> tuple:
    """``function(params, x, y, state)``, its activations dropped after the forward pass and
    recomputed during backward. Reentrant checkpointing, because the non-reentrant kind relies
    on saved-tensor hooks, which torch.func transforms refuse; it accumulates into the
    ``.grad`` of meta-parameters the function closes over, so use ``backward()``, not
    ``torch.autograd.grad``, on a loss that went through it."""
    leaves, spec = tree_flatten((params, state))
    out_spec = []

    def recomputable(x: Tensor, y: Tensor, *leaves: Tensor) -> tuple[Tensor, ...]:
        p, s = tree_unflatten(list(leaves), spec)
        out, structure = tree_flatten(function(p, x, y, s))
        out_spec[:] = [structure]
        return tuple(out)

    out = torch_checkpoint.checkpoint(recomputable, x, y, *leaves, use_reentrant=True)
    return tree_unflatten(list(out), out_spec[0])


def key_dim(keys: Tensor | None) -> int | None:
    """The vmap dimension of a meta-batch's keys: mapped when there are keys."""
    return None if keys is None else 0


def check_at_least(key: str, value: int, least: int) -> None:
    if value < least:
        raise ConfigError(f"algorithm.{key}", f"must be at least {least}, got {value}")


def check_positive(key: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"algorithm.{key}", f"must be positive, got {value}")
    return value


def check_acting(learner: type, task: TaskSpec) -> None:
    """Tasks you act in need a member defined on rollouts and a Gaussian policy's actions."""
    if task.kind != "control":
        return
    if not learner.acts_in_tasks:
        raise ConfigError(
            "algorithm",
            f"{learner.__name__} is not defined on rollouts; on tasks you act in use "
            f"algorithm=maml, metasgd or anil",
        )
    if not task.continuous_actions:
        raise ConfigError(
            "algorithm",
            f"{learner.__name__}'s policy is a Gaussian over continuous actions (dataset="
            f"point_nav); for discrete actions use algorithm=rl2 or a baseline",
        )


class GradientLearner(PolicySearch, nn.Module):
    """The shared inner loop; subclasses choose the rule and, where their paper differs, the
    hooks named in the module docstring."""

    # Vmapped convolutions with per-task weights run as grouped convolutions, which are slower
    # channels-last on a CPU (scripts/benchmarks/maml_protonet.py: 0.76-0.92x of contiguous).
    memory_format = torch.contiguous_format

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        *,
        inner_steps: int = 1,
        test_inner_steps: int = 3,
        first_order: bool = False,
        meta_batch_size: int = 32,
        train_queries: int | None = None,
        chunk_size: int | None = None,
        batch_norm: str = "transductive",
        checkpoint_steps: bool = False,
        adapt_norm: bool = True,
        discount: float = 0.99,
    ) -> None:
        """``adapt_norm=False`` keeps the normalisation layers' affine weights out of the inner
        loop (meta-learned in the outer loop only), as MAML's and MAML++'s code does.
        ``discount``: the returns' discount on tasks you act in (MAML-RL's 0.99)."""
        super().__init__()
        check_acting(type(self), task)
        if not 0 < discount <= 1:
            raise ConfigError("algorithm.discount", f"must be in (0, 1], got {discount}")
        check_at_least("inner_steps", inner_steps, 1)
        check_at_least("test_inner_steps", test_inner_steps, 0)
        check_at_least("meta_batch_size", meta_batch_size, 1)
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError("algorithm.chunk_size", f"must be null or >= 1, got {chunk_size}")
        if batch_norm not in BATCH_NORM_MODES:
            raise ConfigError(
                "algorithm.batch_norm",
                f"must be one of {', '.join(BATCH_NORM_MODES)}, got {batch_norm!r}",
            )
        self.task = task
        self.inner_steps = inner_steps
        self.test_inner_steps = test_inner_steps
        self.first_order = first_order
        self.meta_batch_size = meta_batch_size
        self.train_queries = train_queries
        self.chunk_size = chunk_size
        self.batch_norm = batch_norm
        self.checkpoint_steps = checkpoint_steps
        self.adapt_norm = adapt_norm
        self.discount = float(discount)
        if batch_norm == "per_step" and test_inner_steps > inner_steps:
            raise ConfigError(
                "algorithm.test_inner_steps",
                f"per-step BatchNorm keeps statistics for the {inner_steps} training steps; "
                f"use at most {inner_steps} test steps, or algorithm.batch_norm=transductive",
            )
        self.model = self.build_model(model)
        self.rule = self.build_rule(self.inner_parameters())

    # -- hooks -----------------------------------------------------------------------------
    def build_model(self, model: ModelFactory) -> nn.Module:
        """The model with its head; on tasks you act in, a Gaussian policy on its features."""
        if self.task.kind == "control":
            network: nn.Module = GaussianPolicy(
                model(self.task.input_shape, None), self.task.output_size
            )
        else:
            network = model(self.task.input_shape, self.task.output_size)
        return apply_batch_norm(network, self.batch_norm, self.inner_steps)

    def build_rule(self, params: Params) -> UpdateRule:
        raise NotImplementedError

    def inner_parameters(self) -> Params:
        """The weights the inner loop adapts: every trainable weight of the model except those
        of step-indexed layers (per-step BatchNorm), which are meta-learned per step instead,
        and, with ``adapt_norm=False``, those of normalisation layers. The rest stay in the
        module and are used as they are."""
        outer_only = StepIndexed if self.adapt_norm else (StepIndexed, *NORMALISATION_LAYERS)
        fixed = {
            f"{prefix}.{name}" if prefix else name
            for prefix, module in self.model.named_modules()
            if isinstance(module, outer_only)
            for name, _ in module.named_parameters(recurse=False)
        }
        return {
            name: p
            for name, p in self.model.named_parameters()
            if p.requires_grad and name not in fixed
        }

    def step_loss_weights(self) -> Tensor | None:
        """Weights of the query losses after each inner step, or None for the last step only."""
        return None

    @property
    def second_order(self) -> bool:
        return not self.first_order

    @property
    def autocast_safe(self) -> bool:
        # The policy in metarun/hardware.py: only first order runs under autocast, as a
        # precaution for second order (the bf16 errors measured there do not separate them).
        return not self.second_order

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        return evaluation.replace(queries=self.train_queries)

    # -- one task --------------------------------------------------------------------------
    def _with_noise(self, function: Callable) -> Callable:
        """``function`` for one task, its last argument the task's random key (or None):
        whatever the network draws in the call (DropBlock) comes from that key, so a task
        draws the same numbers in any batch and on any process."""

        def one_task(*args: Any) -> Any:
            *args, key = args
            with noise_for(self.model, key):
                return function(*args)

        return one_task

    def _forward(self, params: Params, x: Tensor, step: int) -> Tensor:
        return self._forward_with_stats(params, x, step)[0]

    def _forward_with_stats(self, params: Params, x: Tensor, step: int) -> tuple[Tensor, Stats]:
        """Predictions, and the batch statistics that step-indexed BatchNorm layers saw (in
        training), which must leave the vmap as outputs to update the running statistics."""
        layers = self._step_indexed()
        for layer in layers.values():
            layer.step = step
            layer.last_stats = None
        out = functional_call(self.model, params, (x,))
        stats = {name: layer.last_stats for name, layer in layers.items() if layer.last_stats}
        return out, stats

    def classifier_head(self) -> nn.Module | None:
        """The module whose outputs are the class logits (sliced to an episode's ways)."""
        return head_of(self.model)

    def _step_indexed(self) -> dict[str, StepIndexed]:
        return {n: m for n, m in self.model.named_modules() if isinstance(m, StepIndexed)}

    def _task_step(
        self,
        params: Params,
        x: Tensor,
        y: Tensor,
        state: State,
        *,
        step: int,
        first_order: bool,
    ) -> tuple[Params, State, Stats]:
        def support_loss(p: Params) -> tuple[Tensor, tuple[Tensor, Stats]]:
            out, stats = self._forward_with_stats(p, x, step)
            loss = self.task.loss(out, y)
            return loss, (loss.detach(), stats)

        grads, (loss, stats) = grad(support_loss, has_aux=True)(params)
        if first_order:
            grads = {name: g.detach() for name, g in grads.items()}
        params, state = self.rule(step, params, grads, loss, state)
        return params, state, stats

    def _update_running_stats(self, stats: Stats, step: int) -> None:
        """One running-statistics update per step and pass, with the meta-batch's mean."""
        layers = self._step_indexed()
        for name, (mean, var) in stats.items():
            layers[name].update_running(step, mean.mean(0), var.mean(0))

    # -- a meta-batch ----------------------------------------------------------------------
    def _vmap(self, function: Callable, in_dims: tuple) -> Callable:
        # Nothing draws from torch's generators inside: random numbers come from task keys.
        return vmap(function, in_dims=in_dims, chunk_size=self.chunk_size, randomness="error")

    def _step(
        self,
        params: Params,
        x: Tensor,
        y: Tensor,
        state: State,
        step: int,
        first_order: bool,
        keys: Tensor | None = None,
        shared: bool = False,
    ) -> tuple[Params, State]:
        """One inner step of every task. ``shared``: ``params`` are the meta-parameters
        themselves, the same for every task (the first step), so vmap runs the support pass as
        one dense batch rather than a grouped convolution per task."""
        one_task = self._with_noise(partial(self._task_step, step=step, first_order=first_order))
        lifted = self._vmap(one_task, (None if shared else 0, 0, 0, 0, key_dim(keys)))
        step_keys = None if keys is None else fold(keys, step)

        def tasks(params: Params, x: Tensor, y: Tensor, state: State) -> tuple:
            return lifted(params, x, y, state, step_keys)

        if self.checkpoint_steps and torch.is_grad_enabled():
            params, state, stats = checkpointed(tasks, params, x, y, state)
        else:
            params, state, stats = tasks(params, x, y, state)
        self._update_running_stats(stats, step)
        return params, state

    def adapt_batch(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int,
        first_order: bool,
        keys: Tensor | None = None,
        start: Params | None = None,
    ) -> list[tuple[int, Params]]:
        """The adapted weights ``[tasks, ...]`` after each inner step, with the step index
        that the query forward pass uses (MAML++'s convention: the index of the step just
        taken; 0 when no step is taken). ``keys`` ``[tasks]``: the tasks' random keys, for a
        network that draws in training (``EpisodeBatch.keys``). ``start``: each task's own
        initial weights ``[tasks, ...]`` (PLATIPUS's sampled ones) instead of the
        meta-parameters."""
        tasks = support_x.shape[0]
        if start is None:
            params = self.inner_parameters()
            expanded = self.expanded_parameters(tasks)
        else:
            params = expanded = start
        state = self.rule.init_state(expanded)
        trajectory = [(0, expanded)] if steps == 0 else []
        keys = stream(keys, "inner steps")
        for step in range(steps):
            shared = step == 0 and start is None
            params, state = self._step(
                params, support_x, support_y, state, step, first_order, keys, shared=shared
            )
            trajectory.append((step, params))
        return trajectory

    def _query(self, params: Params, x: Tensor, step: int, keys: Tensor | None = None) -> Tensor:
        one_task = self._with_noise(partial(self._forward_with_stats, step=step))
        lifted = self._vmap(one_task, (0, 0, key_dim(keys)))
        query_keys = None if keys is None else fold(stream(keys, "query"), step)
        predictions, stats = lifted(params, x, query_keys)
        self._update_running_stats(stats, step)
        return predictions

    @answers_episode_ways
    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        if self.task.kind == "control":
            return self.policy_meta_loss(batch)
        weights = self.step_loss_weights()
        trajectory = self.adapt_batch(
            batch.support_x, batch.support_y, self.inner_steps, not self.second_order, batch.keys
        )
        if weights is None:
            trajectory = trajectory[-1:]
        losses = []
        for step, params in trajectory:
            predictions = self._query(params, batch.query_x, step, batch.keys)
            losses.append(batched_loss(self.task, predictions, batch.query_y))
        if weights is None:
            loss = losses[-1]
        else:
            loss = (weights.to(losses[0]) * torch.stack(losses)).sum()
        score = self.task.score(predictions.detach(), batch.query_y).mean()
        return loss, {"loss": loss.detach(), self.task.metric: score}

    @answers_episode_ways
    @torch.no_grad()
    def predict(self, batch: EpisodeBatch) -> Tensor:
        # torch.func.grad differentiates even under torch.no_grad(); no graph reaches the
        # meta-parameters.
        step, params = self.adapt_batch(
            batch.support_x, batch.support_y, self.test_inner_steps, first_order=True
        )[-1]
        return self._query(params, batch.query_x, step)

    def check_ways(self, support_y: Tensor) -> None:
        """A support set with more classes than the head has outputs is refused in one line."""
        if self.task.kind == "classification" and int(support_y.max()) >= self.task.output_size:
            raise ValueError(
                f"this {type(self).__name__} learner has a {self.task.output_size}-way head; a "
                f"support set with {int(support_y.max()) + 1} classes needs a learner trained "
                f"with that many ways"
            )

    @adapts_to_support_ways
    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        self.check_ways(support_y)
        with torch.no_grad():
            step, params = self.adapt_batch(
                support_x.unsqueeze(0), support_y.unsqueeze(0), self.test_inner_steps, True
            )[-1]
        adapted = {name: p[0].detach() for name, p in params.items()}

        def classify(query_x: Tensor) -> Tensor:
            return self._forward(adapted, query_x, step)

        return classify


__all__ = [
    "GradientLearner",
    "Params",
    "SGDStep",
    "State",
    "UpdateRule",
    "check_at_least",
    "check_positive",
    "key_dim",
]
