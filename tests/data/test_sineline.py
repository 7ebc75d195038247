"""Sinusoid-or-line tasks (PLATIPUS's ambiguous regression): both kinds in their ranges and in
equal shares, noise of the stated std, plans that say which function each task is, and one-line
errors naming the key."""

from __future__ import annotations

import pytest
import torch

from metarun.data.episodes import EpisodeSpec, FixedEpisodes, sample
from metarun.data.sineline import LINE, SINUSOID, Sineline, true_values
from metarun.errors import ConfigError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def plan_of(data: Sineline, count: int, seed: int = 0) -> torch.Tensor:
    return data.sampler("train", data.episodes).draw(count, gen(seed))


def test_shapes_follow_the_episode_spec() -> None:
    data = Sineline(shots=5, queries=7)
    batch = sample(data.sampler("train", data.episodes), 3, gen(0))
    assert batch.support_x.shape == (3, 5, 1) and batch.query_y.shape == (3, 7, 1)
    assert data.task.kind == "regression" and data.task.input_shape == (1,)


def test_both_kinds_in_equal_shares_and_in_their_ranges() -> None:
    data = Sineline(amplitude=(0.5, 2.0), phase=(1.0, 2.0), slope=(-1.0, 0.5), intercept=(2, 3))
    plan = plan_of(data, 4000)
    kind, a, b, x = plan[:, 0], plan[:, 1], plan[:, 2], plan[:, 3 : 3 + 15]
    assert set(kind.tolist()) == {SINUSOID, LINE}
    assert 0.47 < float((kind == LINE).float().mean()) < 0.53
    sine, line = kind == SINUSOID, kind == LINE
    for values, (low, high) in [
        (a[sine], (0.5, 2.0)),
        (b[sine], (1.0, 2.0)),
        (a[line], (-1.0, 0.5)),
        (b[line], (2.0, 3.0)),
        (x.flatten(), (-5.0, 5.0)),
    ]:
        assert low <= float(values.min()) and float(values.max()) <= high
        assert float(values.max() - values.min()) > 0.9 * (high - low)  # covered, not a corner
    assert float((plan_of(Sineline(line_probability=1.0), 50)[:, 0] == LINE).float().min()) == 1


def test_targets_are_the_plans_function_plus_noise_of_the_stated_std() -> None:
    data = Sineline(shots=5, queries=15, noise_std=0.3)
    plan = plan_of(data, 2000, seed=1)
    batch = data.sampler("train", data.episodes).gather(plan)
    x = torch.cat([batch.support_x, batch.query_x], 1)[..., 0]
    y = torch.cat([batch.support_y, batch.query_y], 1)[..., 0]
    residual = y - true_values(plan, x)
    assert float(residual.std()) == pytest.approx(0.3, abs=0.01)
    assert abs(float(residual.mean())) < 0.01
    exact = Sineline(shots=5, queries=15, noise_std=0.0)
    clean = exact.sampler("train", exact.episodes).gather(plan)
    assert torch.equal(torch.cat([clean.support_y, clean.query_y], 1)[..., 0], true_values(plan, x))
    # The two kinds are the two formulas.
    line, sine = int((plan[:, 0] == LINE).nonzero()[0]), int((plan[:, 0] == SINUSOID).nonzero()[0])
    x0 = x[line, 0]
    assert float(true_values(plan[line : line + 1], x0[None])) == pytest.approx(
        float(plan[line, 1] * x0 + plan[line, 2]), abs=1e-5
    )
    x0 = x[sine, 0]
    assert float(true_values(plan[sine : sine + 1], x0[None])) == pytest.approx(
        float(plan[sine, 1] * torch.sin(x0 - plan[sine, 2])), abs=1e-5
    )


def test_the_same_seed_gives_the_same_tasks_and_any_slice_gathers_alike() -> None:
    data = Sineline()
    sampler = data.sampler("test", data.episodes)
    first = FixedEpisodes(sampler, 20, seed=3)
    again = FixedEpisodes(sampler, 20, seed=3)
    assert torch.equal(first.plan, again.plan)
    assert not torch.equal(first.plan, FixedEpisodes(sampler, 20, seed=4).plan)
    whole = sampler.gather(first.plan)
    part = sampler.gather(first.plan[5:9])
    assert torch.equal(part.query_y, whole.query_y[5:9])


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"noise_std": -0.1}, "dataset.noise_std"),
        ({"line_probability": 1.5}, "dataset.line_probability"),
        ({"slope": (3.0, -3.0)}, "dataset.slope"),
        ({"intercept": (1.0, 0.0)}, "dataset.intercept"),
        ({"amplitude": (5.0, 0.1)}, "dataset.amplitude"),
    ],
)
def test_bad_settings_name_their_key_in_one_line(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Sineline(**settings)
    assert caught.value.key == key and "\n" not in str(caught.value)


def test_episode_sizes_are_checked_by_the_sampler() -> None:
    with pytest.raises(ConfigError, match="dataset.shots"):
        Sineline().sampler("train", EpisodeSpec(ways=1, shots=0, queries=5))
