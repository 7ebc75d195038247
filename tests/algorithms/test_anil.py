"""ANIL's defining computation: only the head is adapted, and the batched meta-gradient (body
features computed once per task, head steps vmapped) equals a plain per-task loop that adapts
the head of the full network with ``torch.autograd.grad(create_graph=True)``."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from learner_helpers import image_batch, reference_model, vary_batch_norm
from torch import nn
from torch.func import functional_call

from metarun.algorithms.anil import ANIL
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import MLP, Conv4

HEAD = ("head.weight", "head.bias")


def tiny_anil(**kwargs) -> ANIL:
    torch.manual_seed(0)
    task = TaskSpec("classification", (1, 16, 16), 3)
    learner = ANIL(partial(Conv4, hidden_channels=4), task, **kwargs).double()
    vary_batch_norm(learner)
    return learner


def loop_meta_gradient(learner: ANIL, batch: EpisodeBatch, first_order: bool) -> list[torch.Tensor]:
    """Per task: the full network on the support set every step, SGD on the head's weights
    only, then the query loss; differentiated with respect to every weight."""
    model = reference_model(learner)
    params = dict(learner.model.named_parameters())
    total = 0.0
    for t in range(len(batch)):
        fast = dict(params)
        for _ in range(learner.inner_steps):
            loss = F.cross_entropy(
                functional_call(model, fast, (batch.support_x[t],)), batch.support_y[t]
            )
            head = [fast[n] for n in HEAD]
            grads = torch.autograd.grad(loss, head, create_graph=not first_order)
            fast.update(
                {n: w - learner.inner_lr * g for n, w, g in zip(HEAD, head, grads, strict=True)}
            )
        query = functional_call(model, fast, (batch.query_x[t],))
        total = total + F.cross_entropy(query, batch.query_y[t])
    return list(torch.autograd.grad(total / len(batch), list(params.values())))


def batched_meta_gradient(learner: ANIL, batch: EpisodeBatch) -> list[torch.Tensor]:
    loss, _ = learner.meta_loss(batch)
    return list(torch.autograd.grad(loss, list(learner.model.parameters())))


@pytest.mark.parametrize(("first_order", "inner_steps"), [(False, 1), (False, 3), (True, 2)])
def test_meta_gradient_equals_per_task_autograd_loop(first_order: bool, inner_steps: int) -> None:
    learner = tiny_anil(inner_lr=0.5, inner_steps=inner_steps, first_order=first_order)
    batch = image_batch(tasks=3)
    expected = loop_meta_gradient(learner, batch, first_order)
    actual = batched_meta_gradient(learner, batch)
    names = [n for n, _ in learner.model.named_parameters()]
    assert names[-2:] == list(HEAD) and len(names) > 2  # body and head are both compared
    for name, e, a in zip(names, expected, actual, strict=True):
        assert e.abs().max() > 0, name
        torch.testing.assert_close(a, e, atol=1e-9, rtol=1e-7, msg=name)


def test_second_order_differs_from_first_order() -> None:
    """Guards the test above against an ANIL that ignores ``first_order``: the head's inner
    gradient depends on the body's support features, so the body's meta-gradient changes."""
    batch = image_batch(tasks=2)
    second = batched_meta_gradient(tiny_anil(first_order=False), batch)
    first = batched_meta_gradient(tiny_anil(first_order=True), batch)
    body = slice(0, -2)
    assert (
        max((s - f).abs().max().item() for s, f in zip(second[body], first[body], strict=True))
        > 1e-6
    )


def test_the_inner_loop_adapts_only_the_head() -> None:
    learner = tiny_anil(test_inner_steps=2)
    assert set(learner.inner_parameters()) == set(HEAD)
    batch = image_batch(tasks=2)
    _, adapted = learner.adapt_batch(batch.support_x, batch.support_y, 2, True)[-1]
    assert set(adapted) == set(HEAD)
    assert (adapted["head.weight"] - learner.model.head.weight).abs().max() > 1e-6
    before = copy.deepcopy(learner.model.state_dict())
    learner.adapt(batch.support_x[0], batch.support_y[0])(batch.query_x[0])
    after = learner.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(learner.model.head, nn.Linear)  # restored after computing features


def test_body_features_are_computed_once_per_task() -> None:
    """The speed-up ANIL exists for: the body runs once on the support set and once on the
    query set per meta-batch, however many inner steps the head takes."""
    learner = tiny_anil(inner_steps=4)
    calls = []
    learner.model.features.register_forward_hook(lambda *_: calls.append(1))
    learner.meta_loss(image_batch(tasks=2))
    assert len(calls) == 2


def test_predict_matches_adapt_per_task() -> None:
    learner = tiny_anil(inner_steps=1, test_inner_steps=3)
    batch = image_batch(tasks=3)
    with torch.no_grad():
        batched = learner.predict(batch)
    assert not batched.requires_grad
    for t in range(len(batch)):
        classify = learner.adapt(batch.support_x[t], batch.support_y[t])
        torch.testing.assert_close(classify(batch.query_x[t]), batched[t], atol=1e-9, rtol=1e-7)
    learner.test_inner_steps = 0  # no steps: the unadapted network
    with torch.no_grad():
        unadapted = learner.predict(batch)
    direct = torch.stack([learner.model(batch.query_x[t]) for t in range(len(batch))])
    torch.testing.assert_close(unadapted, direct)
    assert (unadapted - batched).abs().max() > 1e-6


def test_checkpointed_steps_give_the_same_gradients() -> None:
    batch = image_batch(tasks=3)
    grads = []
    for checkpoint_steps in (False, True):
        learner = tiny_anil(inner_steps=2, checkpoint_steps=checkpoint_steps, chunk_size=2)
        learner.meta_loss(batch)[0].backward()
        grads.append([p.grad for p in learner.parameters()])
    for plain, recomputed in zip(*grads, strict=True):
        torch.testing.assert_close(recomputed, plain, atol=1e-10, rtol=1e-8)


def test_a_model_without_a_head_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^model: .*head"):
        ANIL(partial(MLP, hidden=(8,)), TaskSpec("classification", (1, 4, 4), 3))


def test_per_step_batch_norm_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^algorithm\.batch_norm: .*transductive or none"):
        tiny_anil(batch_norm="per_step", test_inner_steps=1)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"inner_lr": 0.0}, "algorithm.inner_lr"), ({"inner_steps": 0}, "algorithm.inner_steps")],
)
def test_invalid_settings_name_their_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ANIL(partial(Conv4), TaskSpec("classification", (1, 28, 28), 5), **kwargs)
