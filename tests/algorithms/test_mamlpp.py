"""MAML++'s defining computation: the vmapped meta-gradient with the multi-step loss, learned
per-layer per-step rates and per-step BatchNorm weights equals a plain per-task
``torch.autograd.grad`` loop; with every trick off it is MAML exactly, first order before the
derivative-order switch and second order after; the schedules follow the meta-step alone."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import TINY_SETTINGS, metarun
from learner_helpers import image_batch, reference_model
from torch import Tensor, nn

from metarun.algorithms.base import Scheduled
from metarun.algorithms.gradient import SGDStep
from metarun.algorithms.maml import MAML
from metarun.algorithms.mamlpp import LSLRStep, MAMLPlusPlus, multi_step_loss_weights
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import BatchStatsNorm, Conv4, PerStepBatchNorm
from metarun.tracking.metrics_file import read_metrics

TASK = TaskSpec("classification", (1, 16, 16), 3)
ALL_OFF = {"msl": False, "lslr": False, "per_step_bn_weights": False, "batch_norm": "transductive"}


def tiny(**kwargs) -> MAMLPlusPlus:
    torch.manual_seed(0)
    settings = {"inner_steps": 2, "test_inner_steps": 2, **kwargs}
    learner = MAMLPlusPlus(partial(Conv4, hidden_channels=4), TASK, **settings).double()
    # Non-trivial BatchNorm affine parameters (different per step) and inner rates (different
    # per tensor and step), so that indexing the wrong row or rate would show.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in learner.modules():
            if isinstance(module, BatchStatsNorm | PerStepBatchNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
                module.bias.copy_(torch.rand(module.bias.shape, generator=g) * 0.4 - 0.2)
            if isinstance(module, LSLRStep):
                for rate in module.rates.values():
                    rate.copy_(torch.rand(rate.shape, generator=g) * 0.4 + 0.2)
    return learner


# -- MSL schedule ---------------------------------------------------------------------------
def test_msl_weights_match_a_hand_computed_schedule() -> None:
    # 5 steps annealed over 10 meta-steps: uniform at the start (meta-step 1) ...
    torch.testing.assert_close(multi_step_loss_weights(1, 5, 10), torch.full((5,), 0.2).double())
    # ... halfway (5 of 10 done): non-final (1 - 0.5) / 5, final (1 + 4 * 0.5) / 5 ...
    expected = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.6], dtype=torch.float64)
    torch.testing.assert_close(multi_step_loss_weights(6, 5, 10), expected)
    # ... at 99 of 100 the floor 0.03 / 5 holds the non-final ones; final is 1 - 4 * 0.006 ...
    expected = torch.tensor([0.006] * 4 + [0.976], dtype=torch.float64)
    torch.testing.assert_close(multi_step_loss_weights(100, 5, 100), expected)
    # ... and once annealing is over only the last step's loss counts.
    assert multi_step_loss_weights(11, 5, 10) is None


@pytest.mark.parametrize("inner_steps", [1, 2, 5])
def test_msl_weights_sum_to_one_and_move_monotonically_to_the_last_step(inner_steps: int) -> None:
    anneal = 50
    previous = None
    for step in range(1, anneal + 1):
        weights = multi_step_loss_weights(step, inner_steps, anneal)
        torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
        assert (weights > 0).all()
        if previous is not None:
            assert (weights[:-1] <= previous[:-1]).all() and weights[-1] >= previous[-1]
        previous = weights
    if inner_steps > 1:
        assert previous[-1] > 0.9 and multi_step_loss_weights(1, inner_steps, anneal)[-1] < 0.6
    assert multi_step_loss_weights(anneal + 1, inner_steps, anneal) is None


def test_start_step_drives_the_schedules_from_the_step_alone() -> None:
    learner = tiny(msl_anneal_steps=4, first_order_steps=3)
    assert isinstance(learner, Scheduled)
    seen = {}
    for step in range(1, 7):
        learner.start_step(step, 6)
        seen[step] = (learner.step_loss_weights(), learner.second_order, learner.autocast_safe)
    torch.testing.assert_close(seen[1][0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(seen[3][0], torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert seen[5][0] is None and seen[6][0] is None
    assert [seen[s][1] for s in range(1, 7)] == [False, False, False, True, True, True]
    assert [seen[s][2] for s in range(1, 7)] == [True, True, True, False, False, False]
    # A resumed run (a fresh learner told only the step) is where the first one was.
    resumed = tiny(msl_anneal_steps=4, first_order_steps=3)
    for step in (3, 4, 2):
        resumed.start_step(step, 6)
        learner.start_step(step, 6)
        torch.testing.assert_close(resumed.step_loss_weights(), learner.step_loss_weights())
        assert resumed.second_order == learner.second_order
    # Switches: MSL off is the last step only; first_order is first order throughout.
    off = tiny(msl=False, first_order=True, first_order_steps=0)
    off.start_step(1, 6)
    assert off.step_loss_weights() is None and not off.second_order


# -- LSLR and per-step BatchNorm weights ----------------------------------------------------
def test_lslr_holds_one_learnable_rate_per_adapted_tensor_and_step() -> None:
    torch.manual_seed(0)
    conv4 = partial(Conv4, hidden_channels=4)
    learner = MAMLPlusPlus(conv4, TASK, inner_steps=3, test_inner_steps=3)
    rule = learner.rule
    assert isinstance(rule, LSLRStep)
    adapted = learner.inner_parameters()
    assert len(rule.rates) == len(adapted) == 4 * 2 + 2  # conv weight and bias per block, head
    for name in adapted:
        assert rule.rate(name).shape == (3,)
        torch.testing.assert_close(rule.rate(name).detach(), torch.full((3,), 0.1))
    # Per-step BatchNorm weights are meta-learned, never adapted, and have no rate.
    assert not any(name.split(".")[2] == "1" for name in adapted if name.startswith("feat"))
    assert set(dict(learner.named_parameters())) >= {f"rule.rates.{k}" for k in rule.rates}
    fixed = MAMLPlusPlus(conv4, TASK, lslr=False)
    assert isinstance(fixed.rule, SGDStep) and not list(fixed.rule.parameters())


def test_lslr_adapted_weights_are_w_minus_the_step_rate_times_the_gradient() -> None:
    learner = tiny(inner_steps=2, batch_norm="transductive", per_step_bn_weights=False)
    batch = image_batch()
    trajectory = learner.adapt_batch(batch.support_x, batch.support_y, 2, first_order=True)
    model = reference_model(learner)
    for t in range(len(batch)):
        fast = {n: p.detach() for n, p in learner.inner_parameters().items()}
        for step in range(2):
            fast = {n: p.requires_grad_() for n, p in fast.items()}
            loss = F.cross_entropy(
                torch.func.functional_call(model, fast, (batch.support_x[t],)), batch.support_y[t]
            )
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {
                n: (p - learner.rule.rate(n)[step] * g).detach()
                for (n, p), g in zip(fast.items(), grads, strict=True)
            }
            index, adapted = trajectory[step]
            assert index == step
            for name, value in fast.items():
                torch.testing.assert_close(adapted[name][t], value, atol=1e-10, rtol=1e-8)


def test_per_step_batch_norm_weights_have_one_row_per_step() -> None:
    learner = tiny(inner_steps=3, test_inner_steps=3)
    layers = [m for m in learner.modules() if isinstance(m, PerStepBatchNorm)]
    assert len(layers) == 4
    assert all(m.weight.shape == m.bias.shape == (3, 4) for m in layers)
    assert all(m.running_mean.shape == (3, 4) for m in layers)
    shared = tiny(inner_steps=3, test_inner_steps=3, per_step_bn_weights=False)
    assert all(m.weight.shape == (4,) for m in shared.modules() if isinstance(m, PerStepBatchNorm))


# -- the defining computation ---------------------------------------------------------------


def per_step_forward(params: dict[str, Tensor], x: Tensor, step: int, blocks: int = 4) -> Tensor:
    """Conv-4 written out, with BatchNorm on the batch's statistics and step ``step``'s row of
    the per-step affine parameters: an independent reference for ``PerStepBatchNorm``."""
    for i in range(blocks):
        x = F.conv2d(x, params[f"features.{i}.0.weight"], params[f"features.{i}.0.bias"], padding=1)
        weight, bias = params[f"features.{i}.1.weight"], params[f"features.{i}.1.bias"]
        x = F.batch_norm(x, None, None, weight[step], bias[step], training=True)
        x = F.max_pool2d(F.relu(x), 2)
    return F.linear(x.flatten(1), params["head.weight"], params["head.bias"])


def loop_meta_gradient(learner: MAMLPlusPlus, batch: EpisodeBatch, weights: Tensor) -> list:
    """Per-task loop: second-order inner steps ``w - rate[step] * grad`` and the query losses
    after every step weighted by ``weights`` (MSL)."""
    params = dict(learner.named_parameters())
    adapted = list(learner.inner_parameters())
    steps = learner.inner_steps
    total = 0.0
    for t in range(len(batch)):
        fast = {n: params[f"model.{n}"] for n in adapted}
        fixed = {n[len("model.") :]: p for n, p in params.items() if n.startswith("model.")}
        for step in range(steps):
            out = per_step_forward({**fixed, **fast}, batch.support_x[t], step)
            grads = torch.autograd.grad(
                F.cross_entropy(out, batch.support_y[t]), list(fast.values()), create_graph=True
            )
            fast = {
                n: p - learner.rule.rate(n)[step] * g
                for (n, p), g in zip(fast.items(), grads, strict=True)
            }
            query = per_step_forward({**fixed, **fast}, batch.query_x[t], step)
            total = total + weights[step] * F.cross_entropy(query, batch.query_y[t])
    return list(torch.autograd.grad(total / len(batch), list(params.values())))


def test_meta_gradient_equals_a_per_task_loop_with_msl_lslr_and_per_step_batch_norm() -> None:
    learner = tiny(inner_steps=2, msl_anneal_steps=4, first_order_steps=0)
    learner.train()
    learner.start_step(3, 10)  # halfway through annealing: weights [0.25, 0.75]
    weights = learner.step_loss_weights()
    torch.testing.assert_close(weights, torch.tensor([0.25, 0.75], dtype=torch.float64))
    batch = image_batch()
    expected = loop_meta_gradient(learner, batch, weights)
    loss, _ = learner.meta_loss(batch)
    actual = torch.autograd.grad(loss, list(learner.parameters()))
    names = [n for n, _ in learner.named_parameters()]
    for name, e, a in zip(names, expected, actual, strict=True):
        torch.testing.assert_close(a, e, atol=1e-8, rtol=1e-6, msg=name)
    # Every learned rate and both steps' BatchNorm rows receive gradient.
    grads = dict(zip(names, actual, strict=True))
    assert all(grads[f"rule.rates.{k}"].abs().min() > 0 for k in learner.rule.rates)
    assert (grads["model.features.1.1.weight"].abs().sum(1) > 0).all()


def test_msl_weights_matter() -> None:
    """Guards the test above: the weighted loss is not just the last step's."""
    batch = image_batch()
    learner = tiny(msl_anneal_steps=4)
    learner.start_step(1, 10)
    with_msl, _ = learner.meta_loss(batch)
    learner.start_step(5, 10)
    last_only, _ = learner.meta_loss(batch)
    assert abs(with_msl.item() - last_only.item()) > 1e-4


def maml_twin(learner: MAMLPlusPlus, first_order: bool) -> MAML:
    twin = MAML(
        partial(Conv4, hidden_channels=4),
        TASK,
        inner_lr=learner.inner_lr,
        inner_steps=learner.inner_steps,
        test_inner_steps=learner.test_inner_steps,
        first_order=first_order,
    ).double()
    twin.load_state_dict(learner.state_dict())
    return twin


def meta_gradient(learner: nn.Module, batch: EpisodeBatch) -> list[Tensor]:
    loss, _ = learner.meta_loss(batch)
    return list(torch.autograd.grad(loss, list(learner.parameters())))


def test_with_every_trick_off_it_is_maml_first_order_then_second_order() -> None:
    """MSL, LSLR and per-step BatchNorm off: before the derivative-order switch MAML++ is
    first-order MAML, after it second-order MAML, to float64 precision."""
    learner = tiny(inner_lr=0.4, first_order_steps=2, **ALL_OFF)
    batch = image_batch()
    first, second = maml_twin(learner, True), maml_twin(learner, False)
    before, after = meta_gradient(first, batch), meta_gradient(second, batch)
    # The guard: the two orders differ, so the comparison below can fail.
    assert max((a - b).abs().max().item() for a, b in zip(after, before, strict=True)) > 1e-4
    for step, expected in ((1, before), (2, before), (3, after), (7, after)):
        learner.start_step(step, 10)
        for a, e in zip(meta_gradient(learner, batch), expected, strict=True):
            torch.testing.assert_close(a, e, atol=1e-12, rtol=1e-10)
        with torch.no_grad():
            torch.testing.assert_close(learner.predict(batch), second.predict(batch))


def test_checkpointed_steps_give_the_same_meta_gradient_rates_included() -> None:
    """Recomputed steps must still reach the learned rates and per-step BatchNorm rows, which
    the step closes over rather than receives."""
    batch = image_batch()
    grads = []
    for checkpoint_steps in (False, True):
        learner = tiny(msl_anneal_steps=4, first_order_steps=0, checkpoint_steps=checkpoint_steps)
        learner.start_step(2, 10)
        loss, _ = learner.meta_loss(batch)
        loss.backward()
        grads.append({n: p.grad for n, p in learner.named_parameters()})
    plain, recomputed = grads
    assert all(plain[n] is not None for n in plain)
    for name, g in plain.items():
        torch.testing.assert_close(recomputed[name], g, atol=1e-10, rtol=1e-8, msg=name)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"inner_lr": 0.0}, "algorithm.inner_lr"),
        ({"msl_anneal_steps": 0}, "algorithm.msl_anneal_steps"),
        ({"first_order_steps": -1}, "algorithm.first_order_steps"),
        ({"batch_norm": "transductive"}, "algorithm.per_step_bn_weights"),
        ({"test_inner_steps": 6}, "algorithm.test_inner_steps"),
        ({"batch_norm": "running", "per_step_bn_weights": False}, "algorithm.batch_norm"),
    ],
)
def test_invalid_settings_name_their_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        MAMLPlusPlus(partial(Conv4), TaskSpec("classification", (1, 28, 28), 5), **kwargs)


# -- a whole run ----------------------------------------------------------------------------
def test_end_to_end_on_the_omniglot_sample_follows_the_schedules(
    tmp_path: Path, omniglot_sample_root: Path, data_cache_dir: Path
) -> None:
    done = metarun(
        "experiment=omniglot_sample",
        *TINY_SETTINGS,
        "algorithm=mamlpp",
        "algorithm.meta_batch_size=2",
        "algorithm.inner_steps=2",
        "algorithm.test_inner_steps=2",
        "algorithm.msl_anneal_steps=2",
        "algorithm.first_order_steps=2",
        f"dataset.root={omniglot_sample_root}",
        f"dataset.cache_dir={data_cache_dir}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (summary,) = tmp_path.rglob("summary.json")
    assert 0 <= json.loads(summary.read_text())["test"]["mean"] <= 100
    records: dict[int, dict] = {}
    for record in read_metrics(summary.parent / "metrics.jsonl"):
        records.setdefault(record["step"], {}).update(record)
    # The trainer called start_step: MSL weights [0.5, 0.5] then [0.25, 0.75], then the last
    # step alone; first order for two meta-steps, then second order; Adam's rate decays.
    assert [records[s]["train/msl_final_weight"] for s in (1, 2, 3, 4)] == [0.5, 0.75, 1.0, 1.0]
    assert [records[s]["train/second_order"] for s in (1, 2, 3, 4)] == [0.0, 0.0, 1.0, 1.0]
    rates = [records[s]["train/lr"] for s in (1, 2, 3, 4)]
    assert 1e-3 > rates[0] > rates[1] > rates[2] > rates[3] == pytest.approx(1e-5)


def test_test_time_statistics_are_the_batch_s_or_the_running_ones() -> None:
    """``batch`` (the authors' code): eval mode normalises as training mode does and leaves the
    running statistics alone; ``running`` (the paper's text): they normalise at test."""
    batch = image_batch()
    predictions = {}
    for statistics in ("batch", "running"):
        learner = tiny(bn_test_statistics=statistics, msl=False)
        learner.train()
        learner.meta_loss(batch)  # moves the running statistics off their initial values
        running = [b.clone() for b in learner.buffers()]
        learner.eval()
        with torch.no_grad():
            predictions[statistics] = learner.predict(batch)
        assert all(torch.equal(a, b) for a, b in zip(running, learner.buffers(), strict=True))
    learner = tiny(bn_test_statistics="batch", msl=False)
    learner.train()
    learner.meta_loss(batch)
    with torch.no_grad():
        in_train_mode = learner.predict(batch)
    torch.testing.assert_close(predictions["batch"], in_train_mode)
    assert (predictions["batch"] - predictions["running"]).abs().max() > 1e-3


def test_bad_test_statistics_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="algorithm.bn_test_statistics"):
        tiny(bn_test_statistics="population")
