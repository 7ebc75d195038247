"""Meta-LSTM's defining computation: each inner update is its gates applied to weight and gradient,
``theta_t = f_t * theta_{t-1} - i_t * grad_t``, with gates recomputed here from the rule's
parameters; and the vmapped meta-gradient equals a plain per-task loop that treats the learner's
gradients and losses as constants, as the paper does."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from learner_helpers import image_batch, reference_model
from torch import Tensor, nn
from torch.func import functional_call

from metarun.algorithms.meta_lstm import MetaLSTM, MetaLSTMRule, preprocess
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import Conv4

P = 10.0


def tiny(**kwargs) -> MetaLSTM:
    torch.manual_seed(0)
    task = TaskSpec("classification", (1, 16, 16), 3)
    learner = MetaLSTM(partial(Conv4, hidden_channels=4), task, hidden_size=5, **kwargs).double()
    # Gates away from their saturated initial values, so every meta-parameter matters.
    with torch.no_grad():
        learner.rule.forget_gate.bias.fill_(1.5)
        learner.rule.input_gate.bias.fill_(-1.0)
        for gate in (learner.rule.forget_gate, learner.rule.input_gate):
            gate.weight.uniform_(-0.5, 0.5)
    return learner


# -- independent references ---------------------------------------------------------------
def reference_preprocess(x: Tensor) -> Tensor:
    """The formula as Andrychowicz et al. write it, branch by branch."""
    big = x.abs() >= math.exp(-P)
    magnitude = torch.where(big, torch.log(x.abs()) / P, torch.full_like(x, -1.0))
    direction = torch.where(big, torch.sign(x), x * math.exp(P))
    return torch.stack([magnitude, direction], -1)


def reference_gate(gate: nn.Linear, h: Tensor, theta: Tensor, previous: Tensor) -> Tensor:
    """sigmoid(W [h, theta, previous] + b), written out term by term."""
    w, hidden = gate.weight[0], h.shape[-1]
    z = (h * w[:hidden]).sum(-1) + theta * w[hidden] + previous * w[hidden + 1] + gate.bias[0]
    return torch.sigmoid(z)


def reference_update(
    rule: MetaLSTMRule, theta: Tensor, grad: Tensor, loss: Tensor, state: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """One meta-learner step on one coordinate vector, with PyTorch's own LSTM cell."""
    x = torch.cat([reference_preprocess(loss).expand(len(theta), 2), reference_preprocess(grad)], 1)
    h, c = rule.lstm(x, (state["h"], state["c"]))
    f = reference_gate(rule.forget_gate, h, theta, state["f"])
    i = reference_gate(rule.input_gate, h, theta, state["i"])
    return f * theta - i * grad, {"h": h, "c": c, "f": f, "i": i}


def as_params(theta: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    pieces = theta.split([p.numel() for p in like.values()])
    return {n: v.view_as(p) for (n, p), v in zip(like.items(), pieces, strict=True)}


def loop_meta_loss(learner: MetaLSTM, batch: EpisodeBatch) -> Tensor:
    """Per-task Python loop: gradients and losses detached (the paper ignores second
    derivatives), the meta-learner's graph kept through its gates and cell state."""
    model = reference_model(learner)
    params = dict(learner.model.named_parameters())
    total = 0.0
    for t in range(len(batch)):
        theta = torch.cat([p.reshape(-1) for p in params.values()])
        n = len(theta)
        zeros = theta.new_zeros(n, learner.hidden_size)
        state = {"h": zeros, "c": zeros, "f": theta.new_zeros(n), "i": theta.new_zeros(n)}
        for _ in range(learner.inner_steps):
            fast = as_params(theta, params)
            logits = functional_call(model, fast, (batch.support_x[t],))
            loss = F.cross_entropy(logits, batch.support_y[t])
            grads = torch.autograd.grad(loss, list(fast.values()))  # no graph: constants
            grad = torch.cat([g.reshape(-1) for g in grads])
            theta, state = reference_update(learner.rule, theta, grad, loss.detach(), state)
        query = functional_call(model, as_params(theta, params), (batch.query_x[t],))
        total = total + F.cross_entropy(query, batch.query_y[t])
    return total / len(batch)


def meta_gradient(learner: MetaLSTM, batch: EpisodeBatch) -> tuple[Tensor, list[Tensor]]:
    learner.zero_grad(set_to_none=True)
    loss, _ = learner.meta_loss(batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in learner.parameters()]


# -- the preprocessing ----------------------------------------------------------------------
def test_preprocessing_is_pinned_on_both_sides_of_e_to_the_minus_p() -> None:
    e = math.exp(-P)
    x = torch.tensor([1.0, -0.5, 2 * e, -2 * e, e / 2, -e / 4, 0.0], dtype=torch.float64)
    expected = torch.tensor(
        [
            [0.0, 1.0],
            [math.log(0.5) / 10, -1.0],
            [math.log(2) / 10 - 1, 1.0],  # just above the threshold: log branch
            [math.log(2) / 10 - 1, -1.0],
            [-1.0, 0.5],  # below it: (-1, e^p x)
            [-1.0, -0.25],
            [-1.0, 0.0],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(preprocess(x), expected, atol=1e-12, rtol=0)
    x.requires_grad_(True)
    preprocess(x).sum().backward()
    assert torch.isfinite(x.grad).all()  # also at 0, for second-order use


# -- one update -----------------------------------------------------------------------------
def test_update_is_the_gates_applied_to_weight_and_gradient() -> None:
    torch.manual_seed(1)
    rule = MetaLSTMRule(hidden_size=6).double()
    with torch.no_grad():
        for p in rule.parameters():
            p.uniform_(-0.7, 0.7)
    params = {"w": torch.randn(3, 2, dtype=torch.float64), "b": torch.randn(3, dtype=torch.float64)}
    grads = {"w": torch.randn(3, 2, dtype=torch.float64) * 1e-2, "b": torch.zeros(3).double()}
    grads["b"][0] = 1e-6  # below e^-10 = 4.5e-5: the linear branch of the preprocessing
    loss = torch.tensor(1.3, dtype=torch.float64)
    n = 9
    state = {
        "h": torch.randn(n, 6, dtype=torch.float64),
        "c": torch.randn(n, 6, dtype=torch.float64),
        "f": torch.rand(n, dtype=torch.float64),
        "i": torch.rand(n, dtype=torch.float64),
    }
    new, new_state = rule(0, params, grads, loss, state)

    theta = torch.cat([params["w"].reshape(-1), params["b"]])
    grad = torch.cat([grads["w"].reshape(-1), grads["b"]])
    with torch.no_grad():
        expected, expected_state = reference_update(rule, theta, grad, loss, state)
    f, i = expected_state["f"], expected_state["i"]
    assert 0.05 < f.min() and f.max() < 0.95 and 0.05 < i.min() and i.max() < 0.95
    torch.testing.assert_close(torch.cat([new["w"].reshape(-1), new["b"]]), f * theta - i * grad)
    torch.testing.assert_close(torch.cat([new["w"].reshape(-1), new["b"]]), expected)
    assert new["w"].shape == (3, 2) and new["b"].shape == (3,)
    for key in ("h", "c", "f", "i"):
        torch.testing.assert_close(new_state[key], expected_state[key])
    # The previous gates are inputs: other previous gates, other gates.
    other, _ = rule(0, params, grads, loss, {**state, "f": 1 - state["f"], "i": 1 - state["i"]})
    assert (other["w"] - new["w"]).abs().max() > 1e-6


def test_initialisation_starts_near_gradient_descent_with_a_small_rate() -> None:
    rule = MetaLSTMRule()
    assert 4 <= rule.forget_gate.bias.item() <= 5
    assert -5 <= rule.input_gate.bias.item() <= -4
    for name, p in rule.named_parameters():
        if name not in ("forget_gate.bias", "input_gate.bias"):
            assert p.abs().max() <= 0.01, name
    assert rule.lstm.hidden_size == 20 and rule.forget_gate.in_features == 22


# -- the meta-gradient ----------------------------------------------------------------------
def test_meta_gradient_equals_per_task_loop_with_detached_gradients() -> None:
    learner = tiny(inner_steps=2)  # two steps: the state carries over between them
    batch = image_batch()
    expected_loss = loop_meta_loss(learner, batch)
    expected = torch.autograd.grad(expected_loss, list(learner.parameters()))
    loss, actual = meta_gradient(learner, batch)
    torch.testing.assert_close(loss, expected_loss.detach(), atol=1e-10, rtol=1e-8)
    for e, a in zip(expected, actual, strict=True):
        torch.testing.assert_close(a, e, atol=1e-9, rtol=1e-7)
    # Gates, first-layer LSTM and initialisation all receive meta-gradients.
    named = dict(zip([n for n, _ in learner.named_parameters()], actual, strict=True))
    for name in (
        "rule.forget_gate.weight",
        "rule.forget_gate.bias",
        "rule.input_gate.weight",
        "rule.input_gate.bias",
        "rule.lstm.weight_ih",
        "rule.lstm.weight_hh",
        "model.features.0.0.weight",
        "model.head.weight",
    ):
        assert named[name].abs().max() > 1e-8, name


def test_second_order_differs_from_the_papers_first_order() -> None:
    """Guards the loop comparison: the gradient input being constant is a real choice."""
    batch = image_batch(tasks=2)
    _, first = meta_gradient(tiny(inner_steps=1, first_order=True), batch)
    _, second = meta_gradient(tiny(inner_steps=1, first_order=False), batch)
    assert max((s - f).abs().max().item() for s, f in zip(second, first, strict=True)) > 1e-6


def test_state_survives_chunking_and_step_checkpointing() -> None:
    batch = image_batch(tasks=3)
    _, plain = meta_gradient(tiny(inner_steps=2), batch)
    _, other = meta_gradient(tiny(inner_steps=2, chunk_size=2, checkpoint_steps=True), batch)
    for a, b in zip(plain, other, strict=True):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-8)


def test_predict_uses_the_training_steps_and_matches_adapt() -> None:
    learner = tiny(inner_steps=2)
    assert learner.test_inner_steps == 2
    batch = image_batch(tasks=2)
    with torch.no_grad():
        batched = learner.predict(batch)
    for t in range(len(batch)):
        classify = learner.adapt(batch.support_x[t], batch.support_y[t])
        torch.testing.assert_close(classify(batch.query_x[t]), batched[t], atol=1e-9, rtol=1e-7)
    unadapted = torch.stack([learner.model(batch.query_x[t]) for t in range(len(batch))])
    assert (unadapted - batched).abs().max() > 1e-6


def test_settings() -> None:
    assert not tiny().autocast_safe
    with pytest.raises(ConfigError, match=r"algorithm\.hidden_size"):
        MetaLSTM(partial(Conv4), TaskSpec("classification", (1, 28, 28), 5), hidden_size=0)
    with pytest.raises(ConfigError, match=r"algorithm\.inner_steps"):
        MetaLSTM(partial(Conv4), TaskSpec("classification", (1, 28, 28), 5), inner_steps=0)


# -- configuration and a whole run ----------------------------------------------------------
def test_config_has_the_papers_settings(compose_config) -> None:
    cfg = compose_config(["algorithm=meta_lstm", "dataset=mini_imagenet"])
    assert cfg.trainer.grad_clip == 0.25 and cfg.optimizer.lr == 0.001
    assert cfg.algorithm.inner_steps == 12 and cfg.algorithm.meta_batch_size == 1
    assert cfg.model.hidden_channels == 32 and cfg.trainer.max_steps == 75000
    assert compose_config(["algorithm=meta_lstm"]).model.hidden_channels == 64
