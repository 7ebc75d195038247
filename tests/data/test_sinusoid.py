"""Sinusoid regression tasks (MAML §5.1): shapes, ranges, targets, seeding, validation."""

from __future__ import annotations

import math

import pytest
import torch

from metarun.data.episodes import EpisodeSpec, FixedEpisodes, sample
from metarun.data.sinusoid import Sinusoid, SinusoidTasks
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shapes() -> None:
    data = Sinusoid(shots=5, queries=7)
    sampler = data.sampler("train", data.episodes)
    assert isinstance(sampler, SinusoidTasks)
    batch = sample(sampler, 4, gen(0))
    assert batch.support_x.shape == (4, 5, 1) and batch.support_y.shape == (4, 5, 1)
    assert batch.query_x.shape == (4, 7, 1) and batch.query_y.shape == (4, 7, 1)
    assert batch.ways == 1 and len(batch) == 4
    for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y):
        assert t.dtype == torch.float32


def test_parameters_stay_in_their_ranges_and_targets_are_exact() -> None:
    data = Sinusoid(shots=10, queries=10, amplitude=(0.5, 2.0), phase=(1.0, 2.5), x_range=(-3, 4))
    sampler = data.sampler("train", data.episodes)
    plan = sampler.draw(500, gen(1))
    assert plan.shape == (500, 2 + 20)
    amplitude, phase, x = plan[:, 0], plan[:, 1], plan[:, 2:]
    assert 0.5 <= float(amplitude.min()) and float(amplitude.max()) <= 2.0
    assert 1.0 <= float(phase.min()) and float(phase.max()) <= 2.5
    assert -3.0 <= float(x.min()) and float(x.max()) <= 4.0
    # The ranges are covered, not a corner of them.
    assert float(amplitude.max() - amplitude.min()) > 1.3
    assert float(phase.max() - phase.min()) > 1.3
    assert float(x.max() - x.min()) > 6.5

    batch = sampler.gather(plan)
    xs = torch.cat([batch.support_x, batch.query_x], dim=1)[..., 0]
    ys = torch.cat([batch.support_y, batch.query_y], dim=1)[..., 0]
    assert torch.equal(xs, x)
    assert torch.equal(ys, amplitude[:, None] * torch.sin(x - phase[:, None]))
    # Spot check against plain Python maths.
    a, p, x0 = float(amplitude[3]), float(phase[3]), float(x[3, 0])
    assert float(ys[3, 0]) == pytest.approx(a * math.sin(x0 - p), abs=1e-5)


def test_default_ranges_follow_maml() -> None:
    plan = Sinusoid().sampler("train", Sinusoid().episodes).draw(2000, gen(2))
    assert 0.1 <= float(plan[:, 0].min()) and float(plan[:, 0].max()) <= 5.0
    assert 0.0 <= float(plan[:, 1].min()) and float(plan[:, 1].max()) <= math.pi
    assert -5.0 <= float(plan[:, 2:].min()) and float(plan[:, 2:].max()) <= 5.0


def test_determinism_by_seed() -> None:
    data = Sinusoid()
    sampler = data.sampler("train", data.episodes)
    a, b = sample(sampler, 6, gen(7)), sample(sampler, 6, gen(7))
    for name in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    c = sample(sampler, 6, gen(8))
    assert not torch.equal(a.support_x, c.support_x)
    assert not torch.equal(a.query_y, c.query_y)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"amplitude": (5.0, 0.1)}, "dataset.amplitude"),
        ({"phase": (3.0, 0.0)}, "dataset.phase"),
        ({"x_range": (5.0, -5.0)}, "dataset.x_range"),
        ({"amplitude": (float("nan"), 1.0)}, "dataset.amplitude"),
    ],
)
def test_invalid_ranges_are_config_errors(options: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Sinusoid(**options)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ") and "\n" not in str(info.value)


def test_a_point_range_is_allowed() -> None:
    data = Sinusoid(amplitude=(2.0, 2.0), phase=(0.0, 0.0))
    plan = data.sampler("train", data.episodes).draw(10, gen(0))
    assert torch.equal(plan[:, 0], torch.full((10,), 2.0))
    assert torch.equal(plan[:, 1], torch.zeros(10))


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (EpisodeSpec(1, 0, 5), "algorithm.train_shots"),
        (EpisodeSpec(1, 5, 0), "algorithm.train_queries"),
    ],
)
def test_empty_support_or_query_is_a_config_error(spec: EpisodeSpec, key: str) -> None:
    keys = ("algorithm.train_ways", "algorithm.train_shots", "algorithm.train_queries")
    with pytest.raises(ConfigError) as info:
        Sinusoid().sampler("train", spec, keys)
    assert info.value.key == key


def test_task_is_one_dimensional_regression() -> None:
    data = Sinusoid(shots=5, queries=3)
    assert data.task == TaskSpec("regression", (1,), 1)
    assert data.task.metric == "mse" and not data.task.higher_is_better
    assert data.episodes == EpisodeSpec(ways=1, shots=5, queries=3)
    x = data.preprocess(1.5)
    assert x.shape == (1,) and x.dtype == torch.float32 and float(x) == 1.5


def test_fixed_episodes_work_with_sinusoids() -> None:
    data = Sinusoid(shots=4, queries=6)
    sampler = data.sampler("val", data.episodes)
    fixed = FixedEpisodes(sampler, count=9, seed=5)
    again = FixedEpisodes(data.sampler("val", data.episodes), count=9, seed=5)
    assert torch.equal(fixed.plan, again.plan)
    by_2 = list(fixed.batches(2))
    by_9 = list(fixed.batches(9))
    assert [len(b) for b in by_2] == [2, 2, 2, 2, 1] and len(by_9) == 1
    for name in ("support_x", "support_y", "query_x", "query_y"):
        joined = torch.cat([getattr(b, name) for b in by_2])
        assert torch.equal(joined, getattr(by_9[0], name))
    assert not torch.equal(fixed.plan, FixedEpisodes(sampler, count=9, seed=6).plan)
