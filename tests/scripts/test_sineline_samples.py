"""scripts/sineline_samples.py: the tasks are fixed, half sinusoids and half lines; the drawn
functions are the learners' own predictions on the grid and the plan's true functions."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from script_modules import load_script

from metarun.algorithms import MAML, PLATIPUS
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.sineline import LINE, SINUSOID, Sineline, true_values
from metarun.models import MLP


@pytest.fixture(scope="module")
def script():
    return load_script("sineline_samples")


def test_the_tasks_are_fixed_and_of_both_kinds(script) -> None:
    data = Sineline()
    plan = script.ambiguous_tasks(data, 5, shots=2, seed=7)
    assert plan[:, 0].tolist() == [SINUSOID] * 3 + [LINE] * 2
    assert plan.shape[1] == 3 + 2 * (2 + 1)
    assert torch.equal(script.ambiguous_tasks(data, 5, shots=2, seed=7), plan)
    assert not torch.equal(script.ambiguous_tasks(data, 5, shots=2, seed=8), plan)


def test_the_functions_are_the_learners_predictions_and_the_truth(script) -> None:
    torch.manual_seed(0)
    data = Sineline(shots=3)
    model = partial(MLP, hidden=(8, 8))
    platipus = PLATIPUS(model, data.task, inner_lr=0.01, test_samples=4, init_log_std=-2).eval()
    maml = MAML(model, data.task, inner_lr=0.01).eval()
    plan = script.ambiguous_tasks(data, 2, shots=3, seed=0)
    grid = torch.linspace(-5, 5, 11)
    values = script.functions(platipus, maml, data, plan, 3, grid)
    assert values["samples"].shape == (4, 2, 11) and values["maml"].shape == (2, 11)
    torch.testing.assert_close(values["truth"], true_values(plan, grid))
    # A grid point is scored as a query there would be.
    tasks = data.sampler("test", EpisodeSpec(1, 3, 1)).gather(plan)
    point = torch.full((2, 1, 1), float(grid[4]))
    at_point = EpisodeBatch(tasks.support_x, tasks.support_y, point, point, ways=1)
    torch.testing.assert_close(
        values["samples"][:, :, 4], platipus.sample_predictions(at_point)[..., 0, 0]
    )
    torch.testing.assert_close(values["maml"][:, 4], maml.predict(at_point)[:, 0, 0])
    assert script.picture(values, grid, plan).startswith(b"\x89PNG")
    assert len(script.summary(values, plan)) == 2
