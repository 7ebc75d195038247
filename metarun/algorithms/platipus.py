"""PLATIPUS: Probabilistic LATent model for Incorporating Priors and Uncertainty in few-Shot
learning (Finn, Xu & Levine 2018, NeurIPS, "Probabilistic Model-Agnostic Meta-Learning",
arXiv 1806.02817).

MAML samples one initialisation; PLATIPUS samples many. Its meta-parameters are a Gaussian over
the network's weights and two learned step sizes: the prior mean ``mu_theta`` (the network's
own weights), a per-weight prior std ``sigma_theta``, a per-weight posterior std ``v_q``, and
``gamma_p``, ``gamma_q``. For one task with support set ``S`` and query set ``T``:

* meta-training (the paper's Algorithm 1): the posterior mean
  ``mu_q = mu_theta - gamma_q grad L(mu_theta, T)`` is one gradient step on the *query* set;
  ``theta ~ N(mu_q, v_q^2)`` is drawn (reparameterised, the noise from the task's key);
  ``phi = theta`` after ``inner_steps`` SGD steps on ``S`` at ``inner_lr``; the loss is the
  query set's negative log-likelihood under ``phi`` plus
  ``kl_weight * KL(N(mu_q, v_q^2) || N(mu_p, sigma_theta^2))`` with the prior conditioned on
  the support set, ``mu_p = mu_theta - gamma_p grad L(mu_theta, S)``; averaged over
  ``samples`` draws of ``theta``.
* meta-test (Algorithm 2): ``theta ~ N(mu_p, sigma_theta^2)``, ``test_samples`` times, each
  adapted on ``S`` as above; ``predict`` averages the samples (regression: the mean; classes:
  the mean probability, as log-probabilities), ``sample_predictions`` returns each sample's
  ``[samples, B, Q, outputs]``, which is the point of the method. The query labels are never
  read at test.

The data term is a log-likelihood in nats, so the KL weight means what it means in the ELBO:
per task ``(sum_j -log p(y_j | phi) + kl_weight * KL) / Q``, i.e. the mean over query points
of a Gaussian NLL with std ``likelihood_std`` (regression; by default the data set's
``noise_std``) or of the cross-entropy, plus ``kl_weight * KL / Q``. The gradient steps (the
means' shifts and the inner loop) take MAML's task loss (MSE, cross-entropy), so ``inner_lr``
means what it means for MAML.

Built on the family's functional core (``metarun.algorithms.gradient``): the mean shifts, the
inner loop and the query pass are vmapped over the meta-batch's tasks (the samples of all
tasks form one ``[samples x tasks]`` batch); the stds are log-parameters clamped to
``log_std_range`` wherever they are used, so a collapsed std gives a finite loss and gradient.

Read for facts: the port ``cnguyen10/few_shot_meta_learning`` (``Platipus.py``:
``validation_loss`` for Algorithm 1, ``adaptation`` for Algorithm 2, the KL of the query-set
posterior from the support-set prior, the averaged softmax at test; ``HyperNetClasses.py``,
``PlatipusNet``: log stds, scalar ``gamma_p`` and ``gamma_q``). The paper's text itself could
not be read here; the steps follow the port, whose comments number them as the paper does.
Departures:

* The mean shifts are one gradient step (the paper's formulas); the port repeats
  ``num_inner_updates`` steps of size gamma.
* ``gamma_p`` and ``gamma_q`` start at ``init_gamma`` (0.01, the port's), the log stds at the
  constant ``init_log_std`` (-4), where the port draws them from ``N(-4, 1)``. (Starting the
  gammas at MAML's Omniglot step of 2.0 made the first KL about 1e7 nats against a likelihood
  of a few: with stds of e^-4, a mean shift of 0.2 per weight costs about 100 nats each.)
* The data term is an explicit likelihood (above); the port adds ``KL_weight * KL`` to the mean
  cross-entropy or MSE. Stds are clamped (the port: unclamped).
* The port loops over tasks and samples in Python; here one vmapped computation.
* Per-step BatchNorm (``batch_norm=per_step``) is refused: the shifts and samples would need
  running statistics of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from torch import Tensor, nn
from torch.func import grad

from metarun.algorithms.base import ModelFactory
from metarun.algorithms.episode_ways import adapts_to_support_ways, answers_episode_ways
from metarun.algorithms.gradient import (
    GradientLearner,
    Params,
    SGDStep,
    UpdateRule,
    check_at_least,
    check_positive,
    key_dim,
)
from metarun.algorithms.metasgd import rate_key
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.pictures import new_figure, png_bytes
from metarun.randomness import EVALUATION_KEY, fold, normal, stream


def diagonal_gaussian_kl(
    mean_q: Tensor, log_std_q: Tensor, mean_p: Tensor, log_std_p: Tensor
) -> Tensor:
    """Elementwise ``KL(N(mean_q, std_q^2) || N(mean_p, std_p^2))``, written in log stds so
    that no ratio of two tiny stds is ever formed."""
    ratio = torch.exp(2 * (log_std_q - log_std_p))
    distance = ((mean_q - mean_p) * torch.exp(-log_std_p)) ** 2
    return log_std_p - log_std_q + 0.5 * (ratio + distance - 1.0)


def draw_functions(
    axes: Axes,
    grid: Tensor,
    samples: Tensor,
    support: tuple[Tensor, Tensor],
    query: tuple[Tensor, Tensor] | None = None,
    mean: Tensor | None = None,
    truth: Tensor | None = None,
) -> None:
    """One episode on ``axes``: sampled functions ``[S, m]`` on ``grid`` ``[m]``, the support
    points, and where given the query points, the prior mean's adapted function and the true
    function."""
    for i, values in enumerate(samples):
        label = f"samples ({len(samples)})" if i == 0 else None
        axes.plot(grid, values, color="tab:blue", alpha=0.35, linewidth=1, label=label)
    if truth is not None:
        axes.plot(grid, truth, color="black", linestyle="--", linewidth=1.2, label="true")
    if mean is not None:
        axes.plot(grid, mean, color="tab:red", linewidth=1.5, label="prior mean, adapted")
    if query is not None:
        axes.scatter(*query, color="grey", marker="x", s=18, label="query", zorder=3)
    axes.scatter(*support, color="black", s=22, label="support", zorder=4)


class PLATIPUS(GradientLearner):
    acts_in_tasks = False  # its posterior and KL are defined on labelled support and query sets

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        inner_lr: float = 2.0,
        samples: int = 1,
        test_samples: int = 10,
        kl_weight: float = 1.0,
        likelihood_std: float = 1.0,
        init_gamma: float | None = None,
        init_log_std: float = -4.0,
        log_std_range: tuple[float, float] = (-10.0, 2.0),
        figure_episodes: int = 4,
        **inner_loop: Any,
    ) -> None:
        """``inner_loop``: the family's keys (``GradientLearner``). ``init_gamma``: the
        starting ``gamma_p`` and ``gamma_q`` (None: ``inner_lr``; the YAML: 0.01)."""
        self.inner_lr = check_positive("inner_lr", inner_lr)
        check_at_least("samples", samples, 1)
        check_at_least("test_samples", test_samples, 1)
        check_at_least("figure_episodes", figure_episodes, 0)
        if not kl_weight >= 0:
            raise ConfigError("algorithm.kl_weight", f"must be >= 0, got {kl_weight}")
        self.likelihood_std = check_positive("likelihood_std", likelihood_std)
        bounds = [float(v) for v in log_std_range]
        if len(bounds) != 2 or not bounds[0] < bounds[1]:
            raise ConfigError(
                "algorithm.log_std_range",
                f"must be [low, high] with low < high, got {list(log_std_range)}",
            )
        if not bounds[0] <= init_log_std <= bounds[1]:
            raise ConfigError(
                "algorithm.init_log_std",
                f"must lie in algorithm.log_std_range {bounds}, got {init_log_std}",
            )
        if inner_loop.get("batch_norm") == "per_step":
            raise ConfigError(
                "algorithm.batch_norm", "PLATIPUS takes transductive or none, got 'per_step'"
            )
        self.samples, self.test_samples = samples, test_samples
        self.kl_weight = float(kl_weight)
        self.log_std_range = (bounds[0], bounds[1])
        self.figure_episodes = figure_episodes
        super().__init__(model, task, **inner_loop)
        weights = self.inner_parameters()

        def log_stds() -> nn.ParameterDict:
            return nn.ParameterDict(
                {
                    rate_key(n): nn.Parameter(torch.full_like(p.detach(), init_log_std))
                    for n, p in weights.items()
                }
            )

        self.log_sigma_theta = log_stds()
        self.log_v_q = log_stds()
        gamma = self.inner_lr if init_gamma is None else float(init_gamma)
        self.gamma_p = nn.Parameter(torch.tensor(gamma))
        self.gamma_q = nn.Parameter(torch.tensor(gamma))

    def build_rule(self, params: Params) -> UpdateRule:
        return SGDStep(self.inner_lr)

    def log_std(self, stds: nn.ParameterDict, name: str) -> Tensor:
        return stds[rate_key(name)].clamp(*self.log_std_range)

    # -- the pieces of one task, vmapped over the tasks --------------------------------------
    def _shifted(self, x: Tensor, y: Tensor, gamma: Tensor, keys: Tensor | None) -> Params:
        """``mu_theta - gamma * grad L(mu_theta; x, y)`` per task ``[tasks, ...]``: the prior
        mean (support set, ``gamma_p``) or the posterior mean (query set, ``gamma_q``)."""

        def one_task(mu: Params, x: Tensor, y: Tensor) -> Params:
            grads = grad(lambda p: self.task.loss(self._forward(p, x, 0), y))(mu)
            if self.first_order:
                grads = {n: g.detach() for n, g in grads.items()}
            return {n: mu[n] - gamma * grads[n] for n in mu}

        lifted = self._vmap(self._with_noise(one_task), (None, 0, 0, key_dim(keys)))
        return lifted(self.inner_parameters(), x, y, keys)

    def _draw(
        self, mean: Params, stds: nn.ParameterDict, count: int, keys: Tensor | None
    ) -> Params:
        """``count`` samples ``mean + std * eps`` per task, sample-major ``[count * tasks,
        ...]``: the noise from each task's key in training, from ``EVALUATION_KEY`` at test (the
        same draws for every episode, so its predictions depend on it alone)."""
        device = next(iter(mean.values())).device
        samples = torch.arange(count, device=device)
        if keys is None:  # [count, 1]: one key per sample, shared by every task
            sample_keys = fold(torch.tensor(EVALUATION_KEY, device=device), samples)[:, None]
        else:  # [count, tasks]
            sample_keys = fold(keys[None, :], samples[:, None])
        drawn = {}
        for name, m in mean.items():
            std, shape = self.log_std(stds, name).exp(), m.shape[1:]
            eps = normal(stream(sample_keys, name), shape, m.dtype)  # [count, tasks or 1, ...]
            drawn[name] = (m + std * eps).flatten(0, 1)
        return drawn

    def _adapted(
        self,
        theta: Params,
        support_x: Tensor,
        support_y: Tensor,
        inputs: Tensor,
        steps: int,
        first_order: bool,
        keys: Tensor | None,
    ) -> Tensor:
        """Each sample ``[S * B, ...]`` adapted on its task's support set, evaluated on the
        task's ``inputs``: ``[S, B, n, outputs]``."""
        tasks = support_x.shape[0]
        count = next(iter(theta.values())).shape[0] // tasks
        repeat = lambda t: torch.cat([t] * count)  # noqa: E731
        samples = torch.arange(count, device=support_x.device)[:, None]
        sample_keys = None if keys is None else fold(keys[None, :], samples).flatten()
        step, params = self.adapt_batch(
            repeat(support_x), repeat(support_y), steps, first_order, sample_keys, start=theta
        )[-1]
        predictions = self._query(params, repeat(inputs), step, sample_keys)
        return predictions.view(count, tasks, *predictions.shape[1:])

    def kl(self, mean_q: Params, mean_p: Params) -> Tensor:
        """``KL(N(mean_q, v_q^2) || N(mean_p, sigma_theta^2))`` of each task, ``[tasks]``."""
        total = 0.0
        for name in mean_q:
            log_v = self.log_std(self.log_v_q, name)
            log_sigma = self.log_std(self.log_sigma_theta, name)
            kl = diagonal_gaussian_kl(mean_q[name], log_v, mean_p[name], log_sigma)
            total = total + kl.flatten(1).sum(1)
        return total

    def nll(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """Mean negative log-likelihood per query point of each task, in nats (``[T, n, ...]``
        to ``[T]``): the cross-entropy, or a Gaussian with std ``likelihood_std``."""
        if self.task.kind == "classification":
            flat = F.cross_entropy(predictions.flatten(0, 1), targets.flatten(), reduction="none")
            return flat.view(targets.shape).mean(1)
        s = self.likelihood_std
        point = 0.5 * ((predictions - targets) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)
        return point.flatten(2).sum(2).mean(1)

    def combine(self, predictions: Tensor) -> Tensor:
        """The samples' ``[S, B, n, outputs]`` as one prediction ``[B, n, outputs]``: their
        mean, or for classes the log of their mean probability."""
        if self.task.kind == "classification":
            return predictions.log_softmax(-1).logsumexp(0) - math.log(predictions.shape[0])
        return predictions.mean(0)

    # -- meta-training -----------------------------------------------------------------------
    def training_terms(self, batch: EpisodeBatch, keys: Tensor) -> tuple[Tensor, Tensor]:
        """Algorithm 1 for a meta-batch: the adapted samples' query predictions ``[samples, B,
        Q, outputs]`` and each task's KL ``[B]``. The query set enters only through the
        posterior mean (and the likelihood the caller scores the predictions with)."""
        mu_q = self._shifted(batch.query_x, batch.query_y, self.gamma_q, stream(keys, "mu_q"))
        mu_p = self._shifted(batch.support_x, batch.support_y, self.gamma_p, stream(keys, "mu_p"))
        theta = self._draw(mu_q, self.log_v_q, self.samples, stream(keys, "posterior draws"))
        predictions = self._adapted(
            theta,
            batch.support_x,
            batch.support_y,
            batch.query_x,
            self.inner_steps,
            not self.second_order,
            stream(keys, "adaptation"),
        )
        return predictions, self.kl(mu_q, mu_p)

    @answers_episode_ways
    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        predictions, kl = self.training_terms(batch, batch.training_keys())
        count = predictions.shape[0]
        targets = torch.cat([batch.query_y] * count)
        nll = self.nll(predictions.flatten(0, 1), targets).view(count, -1).mean(0)
        loss = (nll + self.kl_weight * kl / batch.query_y.shape[1]).mean()
        score = self.task.score(self.combine(predictions.detach()), batch.query_y).mean()
        metrics = {"loss": loss.detach(), "nll": nll.detach().mean(), "kl": kl.detach().mean()}
        return loss, {**metrics, self.task.metric: score}

    # -- meta-test -----------------------------------------------------------------------------
    def _prior_samples(self, support_x: Tensor, support_y: Tensor) -> Params:
        """Algorithm 2's ``theta ~ N(mu_p, sigma_theta^2)``, ``test_samples`` per task."""
        mu_p = self._shifted(support_x, support_y, self.gamma_p, None)
        return self._draw(mu_p, self.log_sigma_theta, self.test_samples, None)

    @torch.no_grad()
    def sample_predictions(self, batch: EpisodeBatch, inputs: Tensor | None = None) -> Tensor:
        """Each sampled model's predictions ``[test_samples, B, n, outputs]`` on ``inputs``
        (default: the query inputs; the query labels are never read)."""
        theta = self._prior_samples(batch.support_x, batch.support_y)
        inputs = batch.query_x if inputs is None else inputs
        support = (batch.support_x, batch.support_y)
        return self._adapted(theta, *support, inputs, self.test_inner_steps, True, None)

    @torch.no_grad()
    def prior_mean_predictions(self, batch: EpisodeBatch, inputs: Tensor) -> Tensor:
        """``[B, n, outputs]``: the prior mean ``mu_p`` (no noise) adapted like a sample."""
        mu_p = self._shifted(batch.support_x, batch.support_y, self.gamma_p, None)
        support = (batch.support_x, batch.support_y)
        return self._adapted(mu_p, *support, inputs, self.test_inner_steps, True, None)[0]

    @answers_episode_ways
    @torch.no_grad()
    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self.combine(self.sample_predictions(batch))

    @adapts_to_support_ways
    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        self.check_ways(support_y)
        with torch.no_grad():
            support = (support_x.unsqueeze(0), support_y.unsqueeze(0))
            theta = self._prior_samples(*support)
            step, params = self.adapt_batch(
                *(torch.cat([t] * self.test_samples) for t in support),
                self.test_inner_steps,
                True,
                start=theta,
            )[-1]
        adapted = {name: p.detach() for name, p in params.items()}

        def predict(query_x: Tensor) -> Tensor:
            inputs = query_x.expand(self.test_samples, *query_x.shape)
            return self.combine(self._query(adapted, inputs, step)[:, None])[0]

        return predict

    # -- pictures ----------------------------------------------------------------------------
    def figures(self, batch: EpisodeBatch) -> dict[str, bytes]:
        """For 1-D regression, each episode's support and query points, the sampled functions
        on a dense grid and the prior mean's adapted function; nothing for classification."""
        if self.task.kind != "regression" or self.task.input_shape != (1,):
            return {}
        xs = torch.cat([batch.support_x, batch.query_x], dim=1)
        grid = torch.linspace(float(xs.min()), float(xs.max()), 200, dtype=xs.dtype)
        inputs = grid.to(xs.device)[None, :, None].expand(len(batch), -1, -1)
        samples = self.sample_predictions(batch, inputs)[..., 0].cpu()
        mean = self.prior_mean_predictions(batch, inputs)[..., 0].cpu()
        figure = new_figure(3.2 * len(batch), 3.0)
        for i, axes in enumerate(figure.subplots(1, len(batch), squeeze=False)[0]):
            episode = batch[i]
            draw_functions(
                axes,
                grid,
                samples[:, i],
                (episode.support_x[:, 0].cpu(), episode.support_y[:, 0].cpu()),
                (episode.query_x[:, 0].cpu(), episode.query_y[:, 0].cpu()),
                mean[i],
            )
            axes.set_title(f"episode {i}", fontsize=9)
        figure.axes[0].legend(fontsize=7)
        return {"samples": png_bytes(figure)}


__all__ = ["PLATIPUS", "diagonal_gaussian_kl", "draw_functions"]
