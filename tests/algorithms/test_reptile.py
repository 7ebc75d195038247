"""Reptile's defining computation: one trainer-style outer step (``backward`` of the surrogate +
SGD with lr eps) moves theta by eps times the mean displacement ``phi_i - theta``, where each
``phi_i`` comes from a plain per-task loop of k SGD or Adam(beta1=0) steps on the same
mini-batches; and its two evaluation modes classify queries as the authors' code does."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import metarun, one_line_error
from learner_helpers import image_batch, reference_model, vary_batch_norm
from torch.func import functional_call

from metarun.algorithms.reptile import Reptile, minibatch_indices
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import BatchStatsNorm, Conv4
from metarun.randomness import stream, task_keys

EPS = 0.7  # the meta step size of the outer SGD step under test


def tiny_reptile(**kwargs) -> Reptile:
    torch.manual_seed(0)
    settings = {"inner_steps": 3, "inner_batch_size": 4, "inner_lr": 0.01, **kwargs}
    task = TaskSpec("classification", (1, 16, 16), 3)
    learner = Reptile(partial(Conv4, hidden_channels=6), task, **settings).double()
    vary_batch_norm(learner)
    return learner


def loop_adapted(learner: Reptile, batch: EpisodeBatch, index: torch.Tensor) -> list[dict]:
    """phi_i for each task, one task at a time, with a fresh torch.optim optimiser per task
    (Adam with the learner's betas, or plain SGD) on the mini-batches ``index[i, step]``."""
    model = reference_model(learner)
    adapted = []
    for t in range(len(batch)):
        weights = {
            n: p.detach().clone().requires_grad_() for n, p in learner.model.named_parameters()
        }
        if learner.inner_optimizer == "adam":
            optimiser = torch.optim.Adam(
                weights.values(), lr=learner.inner_lr, betas=learner.inner_betas, eps=1e-8
            )
        else:
            optimiser = torch.optim.SGD(weights.values(), lr=learner.inner_lr)
        for step in range(index.shape[1]):
            rows = index[t, step]
            logits = functional_call(model, weights, (batch.support_x[t, rows],))
            loss = F.cross_entropy(logits, batch.support_y[t, rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        adapted.append({n: w.detach() for n, w in weights.items()})
    return adapted


def with_seed(batch: EpisodeBatch, seed: int) -> EpisodeBatch:
    """The batch as meta-step 1 of a run with ``seed`` would key its tasks."""
    return batch.with_keys(task_keys(seed, 1, len(batch)))


def trainer_step(learner: Reptile, batch: EpisodeBatch, seed: int) -> dict[str, torch.Tensor]:
    """What metarun's trainer does with the learner: backward of meta_loss, then SGD(lr=eps)."""
    optimizer = torch.optim.SGD(learner.parameters(), lr=EPS, momentum=0.0)
    loss, metrics = learner.meta_loss(with_seed(batch, seed))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return metrics


def indices_for(learner: Reptile, batch: EpisodeBatch, seed: int) -> torch.Tensor:
    """The mini-batches meta_loss draws for the batch keyed as in a run with ``seed``."""
    keys = stream(with_seed(batch, seed).keys, "mini-batches")
    examples = batch.support_y.shape[1]
    return minibatch_indices(keys, examples, learner.inner_steps, learner.inner_batch_size)


def expected_outer_step(
    learner: Reptile, batch: EpisodeBatch, seed: int
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    theta = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    adapted = loop_adapted(learner, batch, indices_for(learner, batch, seed))
    mean_phi = {n: torch.stack([phi[n] for phi in adapted]).mean(0) for n in theta}
    return {n: theta[n] + EPS * (mean_phi[n] - theta[n]) for n in theta}, adapted


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_outer_step_is_the_mean_displacement_of_a_per_task_loop(inner_optimizer: str) -> None:
    learner = tiny_reptile(inner_optimizer=inner_optimizer, meta_batch_size=3)
    batch = image_batch(tasks=3)
    expected, adapted = expected_outer_step(learner, batch, seed=5)
    metrics = trainer_step(learner, batch, seed=5)
    for name, p in learner.model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], atol=1e-9, rtol=1e-7)
    # The logged loss is the adapted weights' query loss (not the surrogate).
    model = reference_model(learner)
    losses = [
        F.cross_entropy(functional_call(model, phi, (batch.query_x[t],)), batch.query_y[t])
        for t, phi in enumerate(adapted)
    ]
    torch.testing.assert_close(metrics["loss"], torch.stack(losses).mean())


def test_adam_and_sgd_inner_loops_differ() -> None:
    """Guards the test above: the check distinguishes the inner optimisers and mini-batches."""
    batch = image_batch(tasks=3)
    adam, _ = expected_outer_step(tiny_reptile(inner_optimizer="adam"), batch, seed=5)
    sgd, _ = expected_outer_step(tiny_reptile(inner_optimizer="sgd"), batch, seed=5)
    other_batches, _ = expected_outer_step(tiny_reptile(inner_optimizer="adam"), batch, seed=6)
    assert max((adam[n] - sgd[n]).abs().max().item() for n in adam) > 1e-4
    assert max((adam[n] - other_batches[n]).abs().max().item() for n in adam) > 1e-6


def test_serial_reptile_with_unit_step_jumps_to_the_adapted_weights() -> None:
    """meta_batch_size 1 is serial Reptile; with eps = 1 theta becomes that task's phi."""
    learner = tiny_reptile(meta_batch_size=1)
    batch = image_batch(tasks=1)
    theta = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    (phi,) = loop_adapted(learner, batch, indices_for(learner, batch, seed=3))
    loss, _ = learner.meta_loss(with_seed(batch, 3))
    loss.backward()
    torch.optim.SGD(learner.parameters(), lr=1.0).step()
    for name, p in learner.model.named_parameters():
        torch.testing.assert_close(p.detach(), phi[name], atol=1e-9, rtol=1e-7)
    assert max((phi[n] - theta[n]).abs().max().item() for n in theta) > 1e-4  # it moved


def test_mini_batches_are_consecutive_shuffles_that_follow_each_tasks_key() -> None:
    keys = task_keys(0, 1, 4)
    index = minibatch_indices(keys, 5, steps=7, batch_size=3)
    assert index.shape == (4, 7, 3)
    drawn = index.flatten(1)  # 21 draws: four full shuffles of 5, then one more
    for t in range(4):
        for start in range(0, 20, 5):
            assert sorted(drawn[t, start : start + 5].tolist()) == list(range(5))
        assert len(set(map(tuple, drawn[t, :20].view(4, 5).tolist()))) > 1  # fresh shuffles
    assert not torch.equal(index[0], index[1])  # each task its own order
    # A task's batches depend on its own key only, not on its place among the others.
    torch.testing.assert_close(minibatch_indices(keys[2:3], 5, 7, 3)[0], index[2])
    torch.testing.assert_close(minibatch_indices(keys.flip(0), 5, 7, 3)[3], index[0])


def adapted_weights(learner: Reptile, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
    return learner.train_on_tasks(
        batch.support_x,
        batch.support_y,
        learner.test_inner_steps,
        learner.test_inner_batch_size,
        learner._evaluation_keys(len(batch), batch.support_y.device),
    )


def test_non_transductive_predictions_classify_each_query_with_the_support_set() -> None:
    learner = tiny_reptile(transductive=False, test_inner_steps=2, test_inner_batch_size=3)
    batch = image_batch(tasks=2, queries=3)
    predicted = learner.predict(batch)
    phi = adapted_weights(learner, batch)
    model = reference_model(learner)
    for t in range(len(batch)):
        weights = {n: p[t] for n, p in phi.items()}
        for j in range(batch.query_x.shape[1]):
            together = torch.cat([batch.support_x[t], batch.query_x[t, j : j + 1]])
            expected = functional_call(model, weights, (together,))[-1]
            torch.testing.assert_close(predicted[t, j], expected, atol=1e-9, rtol=1e-7)


def test_transductive_predictions_share_the_query_statistics_and_differ() -> None:
    batch = image_batch(tasks=2, queries=3)
    transductive = tiny_reptile(transductive=True, test_inner_steps=2, test_inner_batch_size=3)
    predicted = transductive.predict(batch)
    phi = adapted_weights(transductive, batch)
    model = reference_model(transductive)
    for t in range(len(batch)):
        weights = {n: p[t] for n, p in phi.items()}
        expected = functional_call(model, weights, (batch.query_x[t],))
        torch.testing.assert_close(predicted[t], expected, atol=1e-9, rtol=1e-7)
    # Guard: BatchNorm statistics matter here, so the two modes give different predictions.
    alone = tiny_reptile(transductive=False, test_inner_steps=2, test_inner_batch_size=3)
    assert (alone.predict(batch) - predicted).abs().max() > 1e-3


@pytest.mark.parametrize("transductive", [True, False])
def test_adapt_matches_predict_for_every_episode_of_a_batch(transductive: bool) -> None:
    # Mini-batches smaller than the support set (6 examples), so the shuffles matter.
    learner = tiny_reptile(transductive=transductive, test_inner_steps=3, test_inner_batch_size=2)
    batch = image_batch(tasks=3)
    predicted = learner.predict(batch)
    assert not predicted.requires_grad
    for t in range(len(batch)):
        classify = learner.adapt(batch.support_x[t], batch.support_y[t])
        torch.testing.assert_close(classify(batch.query_x[t]), predicted[t])


def test_training_episodes_use_train_shots_and_queries() -> None:
    assert tiny_reptile(train_shots=10, train_queries=1).training_episodes(
        EpisodeSpec(5, 1, 15)
    ) == EpisodeSpec(5, 10, 1)
    assert tiny_reptile(train_shots=None, train_queries=None).training_episodes(
        EpisodeSpec(5, 1, 15)
    ) == EpisodeSpec(5, 1, 15)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"inner_lr": 0.0}, "algorithm.inner_lr"),
        ({"inner_optimizer": "rmsprop"}, "algorithm.inner_optimizer"),
        ({"inner_betas": [0.9, 1.0]}, "algorithm.inner_betas"),
        ({"inner_batch_size": 0}, "algorithm.inner_batch_size"),
        ({"test_inner_batch_size": 0}, "algorithm.test_inner_batch_size"),
        ({"train_shots": 0}, "algorithm.train_shots"),
        ({"inner_steps": 0}, "algorithm.inner_steps"),
        ({"meta_batch_size": 0}, "algorithm.meta_batch_size"),
    ],
)
def test_invalid_settings_name_their_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Reptile(partial(Conv4), TaskSpec("classification", (1, 28, 28), 5), **kwargs)


def test_the_outer_optimiser_anneals_the_meta_step_linearly_to_zero(compose_config) -> None:
    from metarun.run import build

    cfg = compose_config(["algorithm=reptile", "trainer.max_steps=4"])
    assert cfg.algorithm.meta_batch_size == 5 and cfg.algorithm.train_shots == 10
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build(cfg, "optimizer", params=[parameter])
    scheduler = build(cfg, "scheduler", optimizer=optimizer)
    assert optimizer.param_groups[0]["momentum"] == 0.0
    rates = []
    for _ in range(4):  # the trainer's order: optimiser step, then scheduler step
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1.0, 0.75, 0.5, 0.25])  # the authors' (1 - i / max_steps)


def test_mini_imagenet_gets_the_papers_settings(compose_config) -> None:
    cfg = compose_config(["algorithm=reptile", "dataset=mini_imagenet"])
    assert cfg.algorithm.inner_steps == 8 and cfg.algorithm.train_shots == 15
    assert cfg.model.hidden_channels == 32
    omniglot = compose_config(["algorithm=reptile", "dataset=omniglot"])
    assert omniglot.algorithm.inner_steps == 5 and omniglot.trainer.max_steps == 100000


TINY_REPTILE = (
    "algorithm=reptile",
    "algorithm.meta_batch_size=2",
    "algorithm.train_shots=2",
    "algorithm.inner_steps=2",
    "algorithm.inner_batch_size=4",
    "algorithm.test_inner_steps=3",
)


def reptile_overrides(tiny_overrides, *extra: str) -> list[str]:
    general = [o for o in tiny_overrides("maml") if not o.startswith("algorithm")]
    return [*general, *TINY_REPTILE, *extra]


def test_end_to_end_on_the_omniglot_sample(tmp_path: Path, tiny_overrides):
    """The paper's transductive evaluation; the other is pinned by the predict tests above."""
    overrides = reptile_overrides(tiny_overrides, "hydra.run.dir=run")
    done = metarun(*overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["test"]["metric"] == "acc"
    assert 0.0 <= summary["test"]["mean"] <= 100.0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    trained = [r for r in records if "train/loss" in r]
    assert trained and all("train/displacement" in r for r in trained)
    # Logged after the scheduler step: the meta step size the next step will use.
    assert [r["train/lr"] for r in trained] == pytest.approx([0.75, 0.5, 0.25, 0.0])


def test_too_many_train_shots_is_a_one_line_error(tmp_path: Path, tiny_overrides) -> None:
    line = one_line_error(
        metarun(*reptile_overrides(tiny_overrides, "algorithm.train_shots=25"), cwd=tmp_path)
    )
    assert "algorithm.train_shots + algorithm.train_queries: 25 + 1 images per class exceed" in line


def test_batch_norm_none_is_accepted_and_per_step_refused() -> None:
    assert not any(isinstance(m, BatchStatsNorm) for m in tiny_reptile(batch_norm="none").modules())
    with pytest.raises(ConfigError, match="algorithm.batch_norm"):
        tiny_reptile(batch_norm="per_step")
