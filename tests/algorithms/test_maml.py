"""MAML's defining computation: the vmapped meta-gradient equals a plain per-task loop that
differentiates through the inner SGD steps with ``torch.autograd.grad(create_graph=True)``."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from learner_helpers import image_batch, reference_model, vary_batch_norm
from torch import nn
from torch.func import functional_call

from metarun.algorithms import MAML
from metarun.data.episodes import EpisodeBatch, FixedEpisodes, sample
from metarun.data.sinusoid import Sinusoid
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import MLP, Conv4


def tiny_maml(**kwargs) -> MAML:
    torch.manual_seed(0)
    task = TaskSpec("classification", (1, 16, 16), 3)
    learner = MAML(partial(Conv4, hidden_channels=6), task, **kwargs).double()
    vary_batch_norm(learner)
    return learner


def loop_meta_gradient(learner: MAML, batch: EpisodeBatch, first_order: bool) -> list[torch.Tensor]:
    """Per-task Python loop with autograd.grad(create_graph=True): the textbook MAML."""
    model = reference_model(learner)
    params = dict(learner.model.named_parameters())
    total = 0.0
    for t in range(len(batch)):
        fast = dict(params)
        for _ in range(learner.inner_steps):
            logits = functional_call(model, fast, (batch.support_x[t],))
            loss = F.cross_entropy(logits, batch.support_y[t])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            steps = zip(fast.items(), grads, strict=True)
            fast = {n: p - learner.inner_lr * g for (n, p), g in steps}
        query_logits = functional_call(model, fast, (batch.query_x[t],))
        total = total + F.cross_entropy(query_logits, batch.query_y[t])
    return list(torch.autograd.grad(total / len(batch), list(params.values())))


def vmap_meta_gradient(learner: MAML, batch: EpisodeBatch) -> list[torch.Tensor]:
    loss, _ = learner.meta_loss(batch)
    return list(torch.autograd.grad(loss, list(learner.model.parameters())))


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_meta_gradient_equals_per_task_autograd_loop(first_order: bool, inner_steps: int) -> None:
    learner = tiny_maml(inner_lr=0.4, inner_steps=inner_steps, first_order=first_order)
    batch = image_batch(tasks=4, ways=3, shots=2, queries=2)
    expected = loop_meta_gradient(learner, batch, first_order)
    actual = vmap_meta_gradient(learner, batch)
    for e, a in zip(expected, actual, strict=True):  # float64: only reduction order differs
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-9)


def test_second_order_differs_from_first_order() -> None:
    """Guards the test above against a MAML that silently ignores ``first_order``."""
    batch = image_batch(tasks=2, ways=3, shots=2, queries=2)
    second = vmap_meta_gradient(tiny_maml(first_order=False), batch)
    first = vmap_meta_gradient(tiny_maml(first_order=True), batch)
    assert max((s - f).abs().max().item() for s, f in zip(second, first, strict=True)) > 1e-4


def test_chunked_vmap_gives_the_same_meta_gradient() -> None:
    batch = image_batch(tasks=5, ways=3, shots=1, queries=2)
    whole = vmap_meta_gradient(tiny_maml(), batch)
    chunked = vmap_meta_gradient(tiny_maml(chunk_size=2), batch)
    for w, c in zip(whole, chunked, strict=True):
        torch.testing.assert_close(c, w, atol=1e-10, rtol=1e-8)


def test_batch_norm_uses_each_task_statistics_at_test_time() -> None:
    """Transductive BatchNorm: no running statistics, and train/eval mode change nothing."""
    learner = tiny_maml()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in learner.modules())
    assert not list(learner.buffers())
    batch = image_batch(tasks=2, ways=3, shots=1, queries=2)
    learner.train()
    in_train_mode = learner.predict(batch)
    learner.eval()
    torch.testing.assert_close(learner.predict(batch), in_train_mode)


def test_predict_adapts_with_test_steps_and_matches_adapt() -> None:
    learner = tiny_maml(inner_steps=1, test_inner_steps=3)
    batch = image_batch(tasks=3, ways=3, shots=2, queries=2)
    with torch.no_grad():
        batched = learner.predict(batch)
    assert not batched.requires_grad
    for t in range(len(batch)):
        classify = learner.adapt(batch.support_x[t], batch.support_y[t])
        torch.testing.assert_close(classify(batch.query_x[t]), batched[t], atol=1e-9, rtol=1e-7)
    # Zero test steps is the unadapted initialisation.
    learner.test_inner_steps = 0
    with torch.no_grad():
        unadapted = learner.predict(batch)
    direct = torch.stack([learner.model(batch.query_x[t]) for t in range(len(batch))])
    torch.testing.assert_close(unadapted, direct)
    assert (unadapted - batched).abs().max() > 1e-6


def test_adapt_rejects_more_classes_than_the_head() -> None:
    learner = tiny_maml()
    with pytest.raises(ValueError, match="3-way head"):
        learner.adapt(torch.rand(4, 1, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"inner_lr": -0.1}, "algorithm.inner_lr"),
        ({"inner_lr": 0.0}, "algorithm.inner_lr"),
        ({"inner_steps": 0}, "algorithm.inner_steps"),
        ({"test_inner_steps": -1}, "algorithm.test_inner_steps"),
        ({"meta_batch_size": 0}, "algorithm.meta_batch_size"),
        ({"chunk_size": 0}, "algorithm.chunk_size"),
    ],
)
def test_invalid_settings_name_their_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        MAML(partial(Conv4), TaskSpec("classification", (1, 28, 28), 5), **kwargs)


def test_autocast_is_declared_safe_only_for_first_order() -> None:
    assert tiny_maml(first_order=True).autocast_safe
    assert not tiny_maml(first_order=False).autocast_safe


def test_training_episodes_use_train_queries() -> None:
    from metarun.data.episodes import EpisodeSpec

    learner = tiny_maml(train_queries=1)
    assert learner.training_episodes(EpisodeSpec(3, 1, 15)) == EpisodeSpec(3, 1, 1)
    assert tiny_maml().training_episodes(EpisodeSpec(3, 1, 15)) == EpisodeSpec(3, 1, 15)


def test_sinusoid_maml_lowers_the_loss_by_adapting() -> None:
    """After 1000 meta-updates on sinusoids (paper settings: alpha 0.01, 25 tasks), a few
    inner steps on K=10 points cut the query error of unseen tasks well below the
    initialisation's."""
    torch.manual_seed(0)
    data = Sinusoid(shots=10, queries=10)
    learner = MAML(
        partial(MLP, hidden=(40, 40)),
        data.task,
        inner_lr=0.01,
        inner_steps=1,
        test_inner_steps=10,
        meta_batch_size=25,
    )
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    sampler = data.sampler("train", data.episodes)
    generator = torch.Generator().manual_seed(1)
    for _ in range(1000):
        loss, _ = learner.meta_loss(sample(sampler, 25, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    test = FixedEpisodes(data.sampler("test", data.episodes), 200, seed=123)
    batch = next(test.batches(200))
    with torch.no_grad():
        adapted = data.task.score(learner.predict(batch), batch.query_y).mean()
        before = F.mse_loss(learner.model(batch.query_x.flatten(0, 1)), batch.query_y.flatten(0, 1))
    assert adapted < 0.5 * before, (adapted.item(), before.item())


def test_frozen_parameters_are_not_adapted() -> None:
    learner = tiny_maml(test_inner_steps=2)
    frozen = learner.model.features[0][0].weight
    frozen.requires_grad_(False)
    batch = image_batch(tasks=2, ways=3, shots=1, queries=2)
    _, adapted = learner.adapt_batch(batch.support_x, batch.support_y, 2, True)[-1]
    assert "features.0.0.weight" not in adapted and "head.weight" in adapted
    loss, _ = learner.meta_loss(batch)
    loss.backward()
    assert frozen.grad is None and learner.model.head.weight.grad is not None
