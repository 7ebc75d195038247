"""Meta-SGD's defining computation: ``theta' = theta - alpha * grad`` with a meta-learned
``alpha`` per weight entry, and a vmapped meta-gradient (for ``theta`` and ``alpha``) equal to a
plain per-task ``torch.autograd.grad(create_graph=True)`` loop."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from learner_helpers import image_batch, reference_model
from torch import nn
from torch.func import functional_call

from metarun.algorithms.metasgd import MetaSGD, rate_key
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import BatchStatsNorm, Conv4


def tiny_metasgd(**kwargs) -> MetaSGD:
    torch.manual_seed(0)
    task = TaskSpec("classification", (1, 16, 16), 3)
    learner = MetaSGD(partial(Conv4, hidden_channels=4), task, **kwargs).double()
    with torch.no_grad():
        for module in learner.modules():  # non-trivial affine BatchNorm
            if isinstance(module, BatchStatsNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        next(iter(learner.rule.alpha.values()))[0].neg_()  # a "direction": some rates negative
    return learner


def meta_parameters(learner: MetaSGD) -> tuple[dict, dict]:
    theta = dict(learner.model.named_parameters())
    alpha = {name: learner.rule.alpha[rate_key(name)] for name in theta}
    return theta, alpha


def loop_meta_gradient(
    learner: MetaSGD, batch: EpisodeBatch, first_order: bool
) -> list[torch.Tensor]:
    model = reference_model(learner)
    theta, alpha = meta_parameters(learner)
    total = 0.0
    for t in range(len(batch)):
        fast = dict(theta)
        for _ in range(learner.inner_steps):
            logits = functional_call(model, fast, (batch.support_x[t],))
            loss = F.cross_entropy(logits, batch.support_y[t])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {n: w - alpha[n] * g for (n, w), g in zip(fast.items(), grads, strict=True)}
        logits = functional_call(model, fast, (batch.query_x[t],))
        total = total + F.cross_entropy(logits, batch.query_y[t])
    inputs = [*theta.values(), *alpha.values()]
    return list(torch.autograd.grad(total / len(batch), inputs))


def batched_meta_gradient(learner: MetaSGD, batch: EpisodeBatch) -> list[torch.Tensor]:
    theta, alpha = meta_parameters(learner)
    loss, _ = learner.meta_loss(batch)
    return list(torch.autograd.grad(loss, [*theta.values(), *alpha.values()]))


def test_rates_cover_every_adapted_weight_and_start_in_the_paper_range() -> None:
    torch.manual_seed(0)
    learner = MetaSGD(partial(Conv4, hidden_channels=4), TaskSpec("classification", (1, 16, 16), 3))
    for name, p in learner.inner_parameters().items():
        rate = learner.rule.rate(name)
        assert rate.shape == p.shape and isinstance(rate, nn.Parameter)
        assert 0.005 <= rate.min() and rate.max() <= 0.1
    assert learner.rule.rate("head.weight").std() > 0.01  # random, not one constant
    learned = {n for n, _ in learner.named_parameters() if n.startswith("rule.alpha.")}
    assert learned == {f"rule.alpha.{rate_key(n)}" for n in learner.inner_parameters()}


def test_adapted_weights_are_theta_minus_alpha_times_grad() -> None:
    learner = tiny_metasgd(test_inner_steps=1)
    batch = image_batch(tasks=2)
    _, adapted = learner.adapt_batch(batch.support_x, batch.support_y, 1, True)[-1]
    model = reference_model(learner)
    theta, alpha = meta_parameters(learner)
    for t in range(len(batch)):
        loss = F.cross_entropy(
            functional_call(model, theta, (batch.support_x[t],)), batch.support_y[t]
        )
        grads = dict(zip(theta, torch.autograd.grad(loss, list(theta.values())), strict=True))
        for name, w in theta.items():
            expected = w - alpha[name] * grads[name]
            torch.testing.assert_close(adapted[name][t], expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(("first_order", "inner_steps"), [(False, 1), (False, 2), (True, 1)])
def test_meta_gradient_equals_per_task_autograd_loop(first_order: bool, inner_steps: int) -> None:
    learner = tiny_metasgd(inner_steps=inner_steps, first_order=first_order)
    batch = image_batch(tasks=3)
    expected = loop_meta_gradient(learner, batch, first_order)
    actual = batched_meta_gradient(learner, batch)
    for e, a in zip(expected, actual, strict=True):
        torch.testing.assert_close(a, e, atol=1e-9, rtol=1e-7)


def test_learned_rates_receive_a_gradient_and_second_order_matters() -> None:
    batch = image_batch(tasks=2)
    second = batched_meta_gradient(tiny_metasgd(first_order=False), batch)
    first = batched_meta_gradient(tiny_metasgd(first_order=True), batch)
    rates = len(second) // 2
    assert all(g.abs().sum() > 0 for g in second[rates:])  # every alpha tensor learns
    assert max((s - f).abs().max().item() for s, f in zip(second, first, strict=True)) > 1e-6


def test_checkpointed_steps_give_the_same_grad() -> None:
    batch = image_batch(tasks=3)
    grads = []
    for checkpoint_steps in (False, True):
        learner = tiny_metasgd(inner_steps=2, checkpoint_steps=checkpoint_steps, chunk_size=2)
        learner.meta_loss(batch)[0].backward()
        grads.append({n: p.grad for n, p in learner.named_parameters()})
    plain, recomputed = grads
    assert any(n.startswith("rule.alpha.") for n in plain)
    for name, g in plain.items():
        torch.testing.assert_close(recomputed[name], g, atol=1e-10, rtol=1e-8, msg=name)


def test_predict_matches_adapt_per_task() -> None:
    learner = tiny_metasgd()
    batch = image_batch(tasks=2)
    with torch.no_grad():
        batched = learner.predict(batch)
    for t in range(len(batch)):
        classify = learner.adapt(batch.support_x[t], batch.support_y[t])
        torch.testing.assert_close(classify(batch.query_x[t]), batched[t], atol=1e-9, rtol=1e-7)


def test_rates_are_saved_with_the_learner() -> None:
    learner = tiny_metasgd()
    state = learner.state_dict()
    assert "rule.alpha.head__weight" in state
    clone = tiny_metasgd()
    with torch.no_grad():
        clone.rule.alpha["head__weight"].zero_()
    clone.load_state_dict(state)
    torch.testing.assert_close(clone.rule.alpha["head__weight"], learner.rule.alpha["head__weight"])


@pytest.mark.parametrize("bounds", [(0.1, 0.005), (0.1,)])
def test_a_bad_rate_range_is_a_config_error(bounds) -> None:
    with pytest.raises(ConfigError, match=r"algorithm\.init_lr_range"):
        MetaSGD(partial(Conv4), TaskSpec("classification", (1, 28, 28), 5), init_lr_range=bounds)
