"""scripts/mann_by_sight.py: each test stream is scored by presentation on its own (the same
scores alone as in a batch, from its own order), and the training curve is a moving average of
the logged per-presentation accuracies."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from script_modules import load_script

from metarun.algorithms.mann import MANN, accuracy_by_sight
from metarun.data.episodes import ClassImages, EpisodeSampler, EpisodeSpec, FixedEpisodes
from metarun.data.task import TaskSpec
from metarun.models import Conv4
from metarun.randomness import permutation, stream, task_keys


@pytest.fixture(scope="module")
def script():
    return load_script("mann_by_sight")


class TinyData:
    """Six classes of ten random 8x8 images; every split is the same classes."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 256, (60, 1, 8, 8), generator=g, dtype=torch.uint8)
        self.classes = ClassImages(pixels, torch.full((6,), 10), [f"c{i}" for i in range(6)])

    def sampler(self, split: str, spec: EpisodeSpec) -> EpisodeSampler:
        return EpisodeSampler(self.classes, spec, lambda p: p.double() / 255, split)


def test_each_stream_is_scored_on_its_own(script) -> None:
    torch.manual_seed(0)
    small = {"memory_slots": 8, "memory_width": 5, "controller_size": 12, "read_heads": 2}
    task = TaskSpec("classification", (1, 8, 8), 3)
    learner = MANN(
        partial(Conv4, hidden_channels=4), task, protocol="stream", stream_instances=4, **small
    ).double()
    learner.eval()
    data = TinyData()
    scores = script.sight_accuracy(learner, data, seed=3, episodes=5, batch_size=2)
    assert scores.shape == (5, 4)
    episodes = FixedEpisodes(data.sampler("test", EpisodeSpec(3, 3, 1)), 5, 4)
    keys = stream(task_keys(3, 0, 5), "test stream order")
    for i, episode in enumerate(episodes.batches(1)):
        order = permutation(keys[i : i + 1], 12)
        with torch.no_grad():
            logits, labels = learner.stream_logits(episode, order)
        torch.testing.assert_close(scores[i], accuracy_by_sight(logits, labels, 4)[0])


def test_the_training_curve_is_a_moving_average(script, tmp_path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": 10 * i, "train/acc_sight2": a} for i, a in enumerate([0.2, 0.4, 0.6])]
    metrics.write_text("\n".join(json.dumps(r) for r in rows + [{"step": 30, "val/acc": 50}]))
    curves = script.training_curve(metrics, window=2)
    assert list(curves) == [2]
    steps, values = curves[2]
    assert steps == [0, 10, 20]
    assert values == pytest.approx([20.0, 30.0, 50.0])
    script.draw(curves, 16, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
