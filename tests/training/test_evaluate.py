from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from metarun.algorithms import ProtoNet
from metarun.data.episodes import ClassImages, EpisodeSampler, EpisodeSpec, FixedEpisodes
from metarun.data.task import TaskSpec
from metarun.hardware import Runtime
from metarun.models import Conv4
from metarun.training.evaluate import EvalResult, evaluate, mean_and_ci95


def test_ci95_is_1_96_standard_errors() -> None:
    scores = torch.tensor([90.0, 100.0, 80.0, 100.0, 90.0])
    mean, ci = mean_and_ci95(scores)
    std = math.sqrt(sum((s - 92.0) ** 2 for s in scores.tolist()) / 4)  # sample std
    assert mean == pytest.approx(92.0)
    assert ci == pytest.approx(1.96 * std / math.sqrt(5))
    assert mean_and_ci95(torch.tensor([70.0])) == (70.0, 0.0)
    with pytest.raises(ValueError):
        mean_and_ci95(torch.tensor([]))


def test_result_line_matches_the_published_format() -> None:
    assert EvalResult("acc", 97.93, 0.314, 600).line("test") == (
        "test acc 97.9 ± 0.3 (95% CI, 600 episodes)"
    )
    assert EvalResult("mse", 0.51234, 0.0456, 600).line("test") == (
        "test mse 0.512 ± 0.046 (95% CI, 600 episodes)"
    )
    assert EvalResult("acc", 50.0, 1.0, 10).metrics("val") == {"val/acc": 50.0, "val/acc_ci95": 1.0}


def test_evaluate_scores_every_fixed_episode_and_restores_training_mode() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    classes = ClassImages(
        torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8, generator=g),
        torch.full((6,), 10),
        [f"c{i}" for i in range(6)],
    )
    sampler = EpisodeSampler(classes, EpisodeSpec(3, 1, 2), lambda x: x.float() / 255)
    episodes = FixedEpisodes(sampler, 7, seed=0)
    task = TaskSpec("classification", (1, 28, 28), 3)
    learner = ProtoNet(partial(Conv4, hidden_channels=4), task)
    learner.train()
    runtime = Runtime(torch.device("cpu"), None)
    first = evaluate(learner, episodes, task, runtime, batch_size=3)
    assert learner.training
    assert first.episodes == 7 and 0.0 <= first.mean <= 100.0
    # Per-episode accuracies are multiples of 100/6 (6 queries): the mean over 7 episodes
    # can be recomputed exactly from predict().
    learner.eval()
    with torch.no_grad():
        scores = torch.cat([task.score(learner.predict(b), b.query_y) for b in episodes.batches(7)])
    assert first.mean == pytest.approx(scores.mean().item())
    learner.train()
    assert evaluate(learner, episodes, task, runtime, batch_size=5) == first
