"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms",
arXiv:1803.02999).

Learns an initialisation ``theta`` by training on a task and moving ``theta`` toward the trained
weights: each task runs ``k`` steps of SGD or Adam (the paper: Adam with beta1 = 0) on
mini-batches of its ``train_shots``-per-class examples, giving ``phi_i``; then
``theta <- theta + eps * mean_i(phi_i - theta)`` over a meta-batch of ``n`` tasks (the batched
version; ``meta_batch_size: 1`` is the serial one), with ``eps`` annealed linearly to 0.

It fits metarun's trainer with no special case: ``meta_loss`` returns the surrogate
``mean_i 0.5 * ||theta - phi_i||^2`` (``phi_i`` constants), whose gradient is exactly
``theta - mean_i phi_i``, so ``loss.backward()`` + SGD(lr=eps, no momentum) + a linear decay
(``configs/optimizer/reptile_sgd.yaml``) *is* the outer step, and averaging gradients across
processes (``hardware=ddp``) is the batched version over the whole meta-batch. The surrogate is
never logged: ``loss`` and ``acc`` are the adapted weights' query loss and accuracy.

The inner loop is the family's functional core (``metarun.algorithms.gradient``): one step for
one task with ``torch.func.grad`` + ``functional_call``, vmapped over tasks, first order only and
without any graph to ``theta``. Each task's mini-batches follow the authors' sampler: a stream of
fresh shuffles of its examples, cut into ``k`` batches of ``inner_batch_size`` (a batch may span
two shuffles), drawn from the task's random key (``metarun.randomness``): in training the key of
its index in the run, in evaluation one fixed key for every episode, so a task's batches never
depend on the other tasks of its batch or on its process. Adam's moments are per task and start
at zero.

BatchNorm uses the statistics of the batch it is given (``batch_norm: transductive``; the
paper's code runs it in training mode at test time too), or is left out (``none``).
``transductive`` says which batch a query is in at evaluation: ``true``, all queries together
(their statistics); ``false``, each query alone with the support set, as the authors'
non-transductive evaluation does (vmapped over queries).

Paper defaults (the authors' commands, github.com/openai/supervised-reptile README), Omniglot
5-way 1-shot: Adam(beta1=0) inner lr 1e-3, 5 inner steps on mini-batches of 10, 10 train shots
per class, meta step 1.0 -> 0 linearly, 5 tasks per meta-batch, 100k meta-steps; evaluation: 50
steps on mini-batches of 5. Omniglot 20-way 1-shot: lr 5e-4, 10 steps, batch 20, 200k
meta-steps, eval batch 10. miniImageNet 5-way 1-shot: 8 steps, 15 train shots (others as
Omniglot 5-way). The authors' TensorFlow code keeps one Adam state for the whole run (its
moments are not among the interpolated variables); here each task starts a fresh Adam.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from metarun.algorithms.base import ModelFactory
from metarun.algorithms.episode_ways import adapts_to_support_ways, answers_episode_ways
from metarun.algorithms.gradient import GradientLearner, Params, SGDStep, State, UpdateRule
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec, batched_loss
from metarun.errors import ConfigError
from metarun.randomness import EVALUATION_KEY, fold, permutation, stream

INNER_OPTIMIZERS = ("adam", "sgd")


class AdamStep(UpdateRule):
    """One Adam step per task (``torch.optim.Adam``'s formula, bias-corrected, no weight
    decay), with the moments as per-task state that starts at zero."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8):
        super().__init__()
        self.lr, self.betas, self.eps = lr, tuple(betas), eps

    def init_state(self, params: Params) -> State:
        return {
            f"{moment}.{name}": torch.zeros_like(p) for name, p in params.items() for moment in "mv"
        }

    def forward(
        self, step: int, params: Params, grads: Params, loss: Tensor, state: State
    ) -> tuple[Params, State]:
        beta1, beta2 = self.betas
        t = step + 1
        first_correction, second_correction = 1 - beta1**t, 1 - beta2**t
        new_params, new_state = {}, {}
        for name, p in params.items():
            g = grads[name]
            m = beta1 * state[f"m.{name}"] + (1 - beta1) * g
            v = beta2 * state[f"v.{name}"] + (1 - beta2) * g * g
            denominator = (v / second_correction).sqrt() + self.eps
            new_params[name] = p - self.lr * (m / first_correction) / denominator
            new_state[f"m.{name}"], new_state[f"v.{name}"] = m, v
        return new_params, new_state

    def extra_repr(self) -> str:
        return f"lr={self.lr}, betas={self.betas}, eps={self.eps}"


def minibatch_indices(keys: Tensor, examples: int, steps: int, batch_size: int) -> Tensor:
    """``[tasks, steps, batch_size]`` example indices: for each task (its random key in
    ``keys`` ``[tasks]``), consecutive shuffles of its examples, concatenated and cut into
    ``steps`` batches (the authors' sampler without replacement). A task's batches depend on
    its key only, never on the other tasks."""
    shuffles = math.ceil(steps * batch_size / examples)
    shuffle_keys = fold(keys[:, None], torch.arange(shuffles, device=keys.device))
    order = permutation(shuffle_keys, examples).flatten(1)[:, : steps * batch_size]
    return order.reshape(len(keys), steps, batch_size)


def take(x: Tensor, index: Tensor) -> Tensor:
    """``x[t, index[t]]`` for every task ``t``: one mini-batch per task."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], index]


class Reptile(GradientLearner):
    acts_in_tasks = False  # its outer step moves towards weights adapted on labelled episodes

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        inner_lr: float = 0.001,
        inner_optimizer: str = "adam",
        inner_betas: Sequence[float] = (0.0, 0.999),
        inner_steps: int = 5,
        inner_batch_size: int | None = 10,
        test_inner_steps: int = 50,
        test_inner_batch_size: int | None = 5,
        train_shots: int | None = 10,
        train_queries: int | None = 1,
        meta_batch_size: int = 5,
        transductive: bool = True,
        batch_norm: str = "transductive",
        chunk_size: int | None = None,
    ) -> None:
        if batch_norm == "per_step":
            raise ConfigError(
                "algorithm.batch_norm",
                "Reptile evaluates with more inner steps than it trains with, so there are no "
                "per-step statistics for most of them; use transductive or none",
            )
        if not inner_lr > 0:
            raise ConfigError("algorithm.inner_lr", f"must be positive, got {inner_lr}")
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ConfigError(
                "algorithm.inner_optimizer",
                f"must be one of {', '.join(INNER_OPTIMIZERS)}, got {inner_optimizer!r}",
            )
        betas = tuple(float(b) for b in inner_betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(
                "algorithm.inner_betas", f"must be two numbers in [0, 1), got {list(betas)}"
            )
        for key, value in (
            ("inner_batch_size", inner_batch_size),
            ("test_inner_batch_size", test_inner_batch_size),
            ("train_shots", train_shots),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"algorithm.{key}", f"must be null or >= 1, got {value}")
        self.inner_lr, self.inner_optimizer, self.inner_betas = inner_lr, inner_optimizer, betas
        self.inner_batch_size = inner_batch_size
        self.test_inner_batch_size = test_inner_batch_size
        self.train_shots = train_shots
        self.transductive = transductive
        super().__init__(
            model,
            task,
            inner_steps=inner_steps,
            test_inner_steps=test_inner_steps,
            first_order=True,
            meta_batch_size=meta_batch_size,
            train_queries=train_queries,
            chunk_size=chunk_size,
            batch_norm=batch_norm,
        )

    def build_rule(self, params: Params) -> UpdateRule:
        if self.inner_optimizer == "adam":
            return AdamStep(self.inner_lr, self.inner_betas)
        return SGDStep(self.inner_lr)

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        """Tasks of ``train_shots`` examples per class to train on, plus ``train_queries``
        held-out examples per class that only measure the adapted weights (logged)."""
        return evaluation.replace(shots=self.train_shots, queries=self.train_queries)

    # -- the inner loop --------------------------------------------------------------------
    def train_on_tasks(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int,
        batch_size: int | None,
        keys: Tensor,
    ) -> Params:
        """``phi`` ``[tasks, ...]``: ``steps`` optimiser steps on each task's mini-batches, with
        no graph to the meta-parameters. ``batch_size`` None: the whole support set. ``keys``
        ``[tasks]``: the random keys the mini-batches (and the network, if it draws) come
        from."""
        tasks, examples = support_y.shape
        batch_size = batch_size or examples
        index = minibatch_indices(stream(keys, "mini-batches"), examples, steps, batch_size)
        index = index.to(support_y.device)
        network_keys = stream(keys, "inner steps")
        with torch.no_grad():  # torch.func.grad still differentiates the inner losses
            params = self.expanded_parameters(tasks)
            state = self.rule.init_state(params)
            for step in range(steps):
                x, y = take(support_x, index[:, step]), take(support_y, index[:, step])
                params, state = self._step(params, x, y, state, step, True, network_keys)
        return params

    # -- classifying queries with adapted weights ------------------------------------------
    def _with_support(self, params: Params, support_x: Tensor, query_x: Tensor) -> Tensor:
        """One task, non-transductive: each query in a batch with the support set only."""

        def one(query: Tensor) -> Tensor:
            batch = torch.cat([support_x, query.unsqueeze(0)])
            return functional_call(self.model, params, (batch,))[-1]

        return vmap(one, chunk_size=self.chunk_size)(query_x)

    def classify(
        self,
        params: Params,
        support_x: Tensor,
        query_x: Tensor,
        transductive: bool,
        keys: Tensor | None = None,
    ) -> Tensor:
        """Query predictions ``[tasks, queries, outputs]`` of adapted weights ``[tasks, ...]``."""
        if transductive:
            return self._query(params, query_x, 0, keys)
        return self._vmap(self._with_support, (0, 0, 0))(params, support_x, query_x)

    # -- the MetaLearner interface ---------------------------------------------------------
    @answers_episode_ways
    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        keys = batch.training_keys()
        phi = self.train_on_tasks(
            batch.support_x, batch.support_y, self.inner_steps, self.inner_batch_size, keys
        )
        theta = self.inner_parameters()
        # d/dtheta of mean_i 0.5 ||theta - phi_i||^2 is theta - mean_i phi_i: SGD with lr eps on
        # it moves theta by eps * mean_i (phi_i - theta), Reptile's outer step.
        surrogate = sum(
            0.5 * (theta[name] - phi[name]).pow(2).flatten(1).sum(1).mean() for name in theta
        )
        with torch.no_grad():
            # The training metrics use the query batch's statistics whatever ``transductive``
            # says: one pass per query with the support set would cost more than training.
            predictions = self.classify(
                phi, batch.support_x, batch.query_x, transductive=True, keys=keys
            )
            loss = batched_loss(self.task, predictions, batch.query_y)
            score = self.task.score(predictions, batch.query_y).mean()
            displacement = sum((phi[n] - theta[n]).pow(2).flatten(1).sum(1) for n in theta)
        metrics = {
            "loss": loss,
            self.task.metric: score,
            "displacement": displacement.sqrt().mean(),
        }
        return surrogate, metrics

    @staticmethod
    def _evaluation_keys(tasks: int, device: torch.device) -> Tensor:
        """One key for every evaluation episode: each gets the same mini-batch order, so an
        episode's score depends neither on its batch nor on its process (nor on training)."""
        return torch.full((tasks,), EVALUATION_KEY, dtype=torch.int64, device=device)

    @answers_episode_ways
    @torch.no_grad()
    def predict(self, batch: EpisodeBatch) -> Tensor:
        phi = self.train_on_tasks(
            batch.support_x,
            batch.support_y,
            self.test_inner_steps,
            self.test_inner_batch_size,
            self._evaluation_keys(len(batch), batch.support_y.device),
        )
        return self.classify(phi, batch.support_x, batch.query_x, self.transductive)

    @adapts_to_support_ways
    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        if self.task.kind == "classification" and int(support_y.max()) >= self.task.output_size:
            raise ValueError(
                f"this Reptile learner has a {self.task.output_size}-way head; a support set "
                f"with {int(support_y.max()) + 1} classes needs a learner trained with that many "
                f"ways"
            )
        phi = self.train_on_tasks(
            support_x.unsqueeze(0),
            support_y.unsqueeze(0),
            self.test_inner_steps,
            self.test_inner_batch_size,
            self._evaluation_keys(1, support_y.device),
        )

        def classify(query_x: Tensor) -> Tensor:
            with torch.no_grad():
                out = self.classify(phi, support_x[None], query_x[None], self.transductive)
            return out[0]

        return classify


__all__ = ["AdamStep", "Reptile", "minibatch_indices"]
