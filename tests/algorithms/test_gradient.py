"""The family's shared inner loop: step checkpointing changes memory, not the meta-gradient,
and the BatchNorm key means what it says."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from cli_helpers import metarun
from learner_helpers import image_batch
from torch import nn

from metarun.algorithms import MAML
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import BatchStatsNorm, Conv4, PerStepBatchNorm
from metarun.tracking.metrics_file import read_metrics


def tiny(**kwargs) -> MAML:
    torch.manual_seed(0)
    task = TaskSpec("classification", (1, 16, 16), 3)
    return MAML(partial(Conv4, hidden_channels=4), task, **kwargs).double()


def meta_gradient(learner: MAML, batch: EpisodeBatch) -> list[torch.Tensor]:
    learner.zero_grad(set_to_none=True)
    loss, _ = learner.meta_loss(batch)
    loss.backward()
    return [p.grad.clone() for p in learner.parameters()]


@pytest.mark.parametrize("first_order", [False, True])
def test_checkpointed_steps_give_the_same_meta_gradient(first_order: bool) -> None:
    batch = image_batch()
    plain = meta_gradient(tiny(inner_steps=3, first_order=first_order), batch)
    recomputed = meta_gradient(
        tiny(inner_steps=3, first_order=first_order, checkpoint_steps=True, chunk_size=2), batch
    )
    assert len(plain) == len(recomputed)
    for a, b in zip(plain, recomputed, strict=True):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-8)


def test_batch_norm_none_removes_normalisation_and_still_learns() -> None:
    learner = tiny(batch_norm="none")
    assert not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm | BatchStatsNorm | PerStepBatchNorm)
        for m in learner.modules()
    )
    grads = meta_gradient(learner, image_batch())
    assert all(g.abs().sum() > 0 for g in grads[-2:])  # the head learns


def test_per_step_batch_norm_keeps_running_statistics_per_step() -> None:
    learner = tiny(batch_norm="per_step", inner_steps=2, test_inner_steps=2)
    layers = [m for m in learner.modules() if isinstance(m, PerStepBatchNorm)]
    assert len(layers) == 4 and layers[0].running_mean.shape == (2, 4)
    # Its affine weights are meta-learned, not adapted in the inner loop.
    assert not any("features.0.1" in name for name in learner.inner_parameters())
    batch = image_batch()
    learner.train()
    learner.meta_loss(batch)
    first = layers[0]
    # Both steps' statistics moved away from their initial values, and differently.
    assert (first.running_mean != 0).all()
    assert not torch.allclose(first.running_mean[0], first.running_mean[1])
    # The first layer sees raw images at every step: its step-0 mean is a lerp of batch means.
    x = batch.support_x.flatten(0, 1)
    conv = nn.functional.conv2d(
        x, learner.model.features[0][0].weight, learner.model.features[0][0].bias, padding=1
    )
    expected = 0.1 * conv.mean((0, 2, 3))
    torch.testing.assert_close(first.running_mean[0], expected)
    # At test time the running statistics normalise, so predictions depend on them.
    learner.eval()
    with torch.no_grad():
        before = learner.predict(batch)
        first.running_mean.add_(1.0)
        after = learner.predict(batch)
    assert (before - after).abs().max() > 1e-6


def test_per_step_batch_norm_rejects_more_test_steps_than_it_has_statistics_for() -> None:
    with pytest.raises(ConfigError, match="algorithm.test_inner_steps"):
        tiny(batch_norm="per_step", inner_steps=1, test_inner_steps=3)


def test_unknown_batch_norm_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="algorithm.batch_norm.*transductive, per_step, none"):
        tiny(batch_norm="running")


FAMILY_SWEEP = ("anil", "metasgd", "meta_lstm")  # MAML, MAML++ and Reptile have runs of their own


def test_anil_metasgd_and_meta_lstm_run_end_to_end_as_one_sweep(tmp_path, tiny_overrides) -> None:
    """Each learner's CLI run on the Omniglot sample with its YAML (2 tasks, 2 inner steps): one
    sweep, so one process start for all of them."""
    overrides = [o for o in tiny_overrides("maml") if not o.startswith("algorithm")]
    family = f"algorithm={','.join(FAMILY_SWEEP)}"
    settings = ("algorithm.meta_batch_size=2", "algorithm.inner_steps=2")
    done = metarun("-m", *overrides, family, *settings, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    members = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    assert len(members) == len(FAMILY_SWEEP)
    for member, algorithm in zip(members, FAMILY_SWEEP, strict=True):
        assert f"algorithm={algorithm}" in (member / ".hydra" / "overrides.yaml").read_text()
        summary = json.loads((member / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["steps"] == 4, algorithm
        assert 0 <= summary["test"]["mean"] <= 100, algorithm
        records = read_metrics(member / "metrics.jsonl")
        clipped = any("train/grad_norm" in r for r in records)
        assert clipped == (algorithm == "meta_lstm"), algorithm  # its paper's clipping is on
