"""PLATIPUS: with no noise and no learned steps it is MAML; its KL is the diagonal Gaussians'
closed form; the query set reaches training only through the posterior and never reaches the
test predictions; its draws come from keys; its samples spread where MAML gives one function;
collapsed stds stay finite."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch
from learner_helpers import image_batch
from torch.distributions import Normal, kl_divergence

from metarun.algorithms import MAML, PLATIPUS
from metarun.algorithms.base import Illustrated
from metarun.algorithms.platipus import diagonal_gaussian_kl
from metarun.data.episodes import EpisodeBatch, sample
from metarun.data.sineline import Sineline
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import MLP, Conv4
from metarun.randomness import task_keys

REGRESSION = TaskSpec("regression", (1,), 1)
CLASSES = TaskSpec("classification", (1, 16, 16), 3)


def mlp(hidden: tuple[int, ...] = (16, 16)) -> partial:
    return partial(MLP, hidden=hidden)


def factory(task: TaskSpec) -> partial:
    return mlp() if task.kind == "regression" else partial(Conv4, hidden_channels=6)


def tiny(task: TaskSpec = REGRESSION, **kwargs) -> PLATIPUS:
    torch.manual_seed(0)
    settings = {"inner_lr": 0.05, "inner_steps": 2, "test_inner_steps": 2, **kwargs}
    return PLATIPUS(factory(task), task, **settings).double()


def sineline_batch(tasks: int = 4, shots: int = 5, seed: int = 0) -> EpisodeBatch:
    data = Sineline(shots=shots, queries=6)
    batch = sample(data.sampler("train", data.episodes), tasks, torch.Generator().manual_seed(seed))
    names = ("support_x", "support_y", "query_x", "query_y")
    batch = EpisodeBatch(**{**vars(batch), **{k: getattr(batch, k).double() for k in names}})
    return batch.with_keys(task_keys(0, 1, tasks))


def batch_for(task: TaskSpec, tasks: int = 4) -> EpisodeBatch:
    if task.kind == "regression":
        return sineline_batch(tasks)
    return image_batch(tasks, ways=3, shots=2, queries=2).with_keys(task_keys(0, 1, tasks))


def weight_gradients(learner, batch: EpisodeBatch) -> list[torch.Tensor]:
    loss, _ = learner.meta_loss(batch)
    return list(torch.autograd.grad(loss, list(learner.model.parameters())))


@pytest.mark.parametrize("task", [REGRESSION, CLASSES], ids=["regression", "classes"])
def test_with_no_noise_and_no_learned_steps_it_is_maml(task: TaskSpec) -> None:
    # Stds at a floor of e^-30 (about 1e-13) and gamma_p = gamma_q = 0: theta is mu_theta, the
    # KL is 0 with a zero gradient for the weights, and a Gaussian NLL with variance 1/2 is the
    # squared error plus a constant, so the weights' meta-gradient must be MAML's.
    noiseless = {"init_log_std": -30.0, "log_std_range": (-30.0, 2.0)}
    platipus = tiny(task, init_gamma=0.0, likelihood_std=math.sqrt(0.5), **noiseless)
    maml = MAML(factory(task), task, inner_lr=0.05, inner_steps=2).double()
    maml.model.load_state_dict(platipus.model.state_dict())
    batch = batch_for(task)
    expected = weight_gradients(maml, batch)
    for actual, wanted in zip(weight_gradients(platipus, batch), expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-9, atol=1e-11)
    # ... and it is not MAML once the steps are learned (the check can fail).
    stepping = tiny(task, init_gamma=0.1, likelihood_std=math.sqrt(0.5), **noiseless)
    moved = weight_gradients(stepping, batch)
    assert any(not torch.allclose(a, b) for a, b in zip(moved, expected, strict=True))


def test_the_kl_is_the_closed_form_of_diagonal_gaussians() -> None:
    g = torch.Generator().manual_seed(0)
    mean_q, mean_p = torch.randn(50, generator=g, dtype=torch.float64).chunk(2)
    log_q, log_p = (torch.randn(50, generator=g, dtype=torch.float64) * 0.7).chunk(2)
    std_q, std_p = log_q.exp(), log_p.exp()
    by_hand = torch.log(std_p / std_q) + (std_q**2 + (mean_q - mean_p) ** 2) / (2 * std_p**2) - 0.5
    ours = diagonal_gaussian_kl(mean_q, log_q, mean_p, log_p)
    torch.testing.assert_close(ours, by_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours, kl_divergence(Normal(mean_q, std_q), Normal(mean_p, std_p)))
    assert float(diagonal_gaussian_kl(mean_q, log_q, mean_q, log_q).abs().max()) == 0.0


def test_the_learners_kl_sums_every_weights_kl() -> None:
    learner = tiny()
    g = torch.Generator().manual_seed(1)
    for stds in (learner.log_sigma_theta, learner.log_v_q):
        for p in stds.values():
            p.data = -2 + torch.rand(p.shape, generator=g, dtype=p.dtype)
    mu = dict(learner.model.named_parameters())
    mean_q = {n: p.expand(2, *p.shape) + 0.1 for n, p in mu.items()}
    mean_p = {n: p.expand(2, *p.shape) for n, p in mu.items()}
    expected = sum(
        kl_divergence(
            Normal(mean_q[n], learner.log_std(learner.log_v_q, n).exp()),
            Normal(mean_p[n], learner.log_std(learner.log_sigma_theta, n).exp()),
        )
        .flatten(1)
        .sum(1)
        for n in mu
    )
    torch.testing.assert_close(learner.kl(mean_q, mean_p), expected)


def query_gradients(learner: PLATIPUS, batch: EpisodeBatch) -> dict[str, float]:
    """How much the KL, the predictions and the first query prediction move with the query
    labels, the query labels, and the other query inputs."""
    query_x = batch.query_x.clone().requires_grad_()
    query_y = batch.query_y.clone().requires_grad_()
    batch = EpisodeBatch(**{**vars(batch), "query_x": query_x, "query_y": query_y})
    predictions, kl = learner.training_terms(batch, batch.keys)

    def size(output: torch.Tensor, wrt: torch.Tensor) -> float:
        (g,) = torch.autograd.grad(output, wrt, retain_graph=True, allow_unused=True)
        return 0.0 if g is None else float(g.abs().sum())

    first = predictions[:, :, 0].sum()
    other_inputs = torch.autograd.grad(first, query_x, retain_graph=True)[0][:, 1:]
    return {
        "kl/labels": size(kl.sum(), query_y),
        "kl/inputs": size(kl.sum(), query_x),
        "predictions/labels": size(predictions.sum(), query_y),
        "first/other inputs": float(other_inputs.abs().sum()),
    }


def test_the_query_set_reaches_training_only_through_the_posterior() -> None:
    batch = sineline_batch()
    without = query_gradients(tiny(init_gamma=0.0, init_log_std=-2.0), batch)
    assert without == dict.fromkeys(without, 0.0), without
    with_posterior = query_gradients(tiny(init_gamma=0.1, init_log_std=-2.0), batch)
    assert all(value > 1e-6 for value in with_posterior.values()), with_posterior


def test_the_test_predictions_never_read_the_query_labels_and_score_each_input_alone() -> None:
    learner = tiny(init_log_std=-2.0).eval()
    batch = sineline_batch()
    predicted = learner.predict(batch)
    other_labels = EpisodeBatch(**{**vars(batch), "query_y": torch.randn_like(batch.query_y)})
    assert torch.equal(learner.predict(other_labels), predicted)
    moved = batch.query_x.clone()
    moved[:, 1:] += 1.0
    other_inputs = EpisodeBatch(**{**vars(batch), "query_x": moved})
    assert torch.equal(learner.predict(other_inputs)[:, 0], predicted[:, 0])
    assert not torch.equal(learner.predict(other_inputs)[:, 1:], predicted[:, 1:])


def test_draws_come_from_the_keys() -> None:
    learner = tiny(init_log_std=-2.0, samples=3)
    batch = sineline_batch()
    loss, _ = learner.meta_loss(batch)
    assert torch.equal(copy.deepcopy(learner).meta_loss(batch)[0], loss)
    rekeyed = batch.with_keys(task_keys(0, 2, len(batch)))
    assert not torch.equal(learner.meta_loss(rekeyed)[0], loss)
    learner.eval()
    samples = learner.sample_predictions(batch)
    assert samples.shape == (learner.test_samples, len(batch), 6, 1)
    assert torch.equal(learner.sample_predictions(batch), samples)
    assert float(samples.std(0).min()) > 0  # the samples are different models


def test_on_one_point_tasks_the_samples_spread_where_maml_gives_one_function() -> None:
    # The shipped sineline settings (MLP 40-40, log std -4), untrained: a floor of 0.01 for the
    # samples' standard deviation, averaged over each task's query points (measured: 0.03-0.8).
    torch.manual_seed(0)
    settings = {"inner_lr": 0.01, "test_inner_steps": 10, "likelihood_std": 0.3}
    platipus = PLATIPUS(mlp((40, 40)), REGRESSION, **settings).double().eval()
    maml = MAML(mlp((40, 40)), REGRESSION, inner_lr=0.01, test_inner_steps=10).double().eval()
    batch = sineline_batch(tasks=6, shots=1)
    spread = platipus.sample_predictions(batch).std(0).mean((1, 2))
    assert float(spread.min()) > 0.01, spread
    once, again = maml.predict(batch), maml.predict(batch)
    assert torch.equal(once, again)  # one deterministic function per task: a spread of 0


@pytest.mark.parametrize("log_std", [-1e4, 1e4, float("-inf")])
def test_collapsed_or_exploded_stds_give_finite_losses_and_gradients(log_std: float) -> None:
    learner = tiny(init_gamma=0.1)
    for stds in (learner.log_sigma_theta, learner.log_v_q):
        for p in stds.values():
            p.data.fill_(log_std)
    loss, metrics = learner.meta_loss(sineline_batch())
    loss.backward()
    assert math.isfinite(float(loss.detach())) and math.isfinite(float(metrics["kl"]))
    assert all(torch.isfinite(p.grad).all() for p in learner.parameters() if p.grad is not None)


def test_its_meta_parameters_are_trained_and_saved() -> None:
    learner = tiny()
    names = {n for n, _ in learner.named_parameters()}
    assert {"gamma_p", "gamma_q"} <= names
    assert any(n.startswith("log_sigma_theta.") for n in names)
    assert any(n.startswith("log_v_q.") for n in names)
    loss, _ = learner.meta_loss(sineline_batch())
    loss.backward()
    assert float(learner.gamma_p.grad.abs()) > 0 and float(learner.gamma_q.grad.abs()) > 0
    assert all(float(p.grad.abs().sum()) > 0 for p in learner.log_v_q.values())


def test_it_draws_sampled_functions_for_regression_and_nothing_for_classes() -> None:
    learner = tiny(init_log_std=-2.0).eval()
    assert isinstance(learner, Illustrated)
    pictures = learner.figures(EpisodeBatch(**{**vars(sineline_batch(2)), "keys": None}))
    assert set(pictures) == {"samples"} and pictures["samples"].startswith(b"\x89PNG")
    assert tiny(CLASSES).figures(image_batch(1, ways=3, shots=1, queries=1)) == {}


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"kl_weight": -1.0}, "algorithm.kl_weight"),
        ({"samples": 0}, "algorithm.samples"),
        ({"test_samples": 0}, "algorithm.test_samples"),
        ({"likelihood_std": 0.0}, "algorithm.likelihood_std"),
        ({"log_std_range": (1.0, -1.0)}, "algorithm.log_std_range"),
        ({"init_log_std": -20.0}, "algorithm.init_log_std"),
        ({"batch_norm": "per_step"}, "algorithm.batch_norm"),
    ],
)
def test_bad_settings_name_their_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PLATIPUS(mlp(), REGRESSION, **settings)
    assert caught.value.key == key and "\n" not in str(caught.value)
