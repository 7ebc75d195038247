"""Scoring a learner on a fixed set of episodes: mean and 95% confidence interval.

The interval is the normal approximation used throughout the few-shot literature,
``mean ± 1.96 · std / sqrt(n)`` over per-episode scores (sample standard deviation).

With several processes (``hardware=ddp``) each scores its own contiguous share of the episodes
and the scores are concatenated in episode order, so every process gets the result a single
process would: an episode's score does not depend on which episodes share its batch (each
learner adapts each episode on its own, and whatever it draws comes from one fixed key,
``metarun.randomness.EVALUATION_KEY``; ``tests/algorithms/test_every_learner.py`` checks this
for every learner).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from metarun.algorithms.base import MetaLearner
from metarun.data.episodes import FixedEpisodes
from metarun.data.task import TaskSpec
from metarun.hardware import Runtime
from metarun.intervals import mean_and_ci95


@dataclass(frozen=True)
class EvalResult:
    metric: str
    mean: float
    ci95: float
    episodes: int

    def line(self, split: str) -> str:
        """``test acc 97.9 ± 0.3 (95% CI, 600 episodes)``."""
        digits = 1 if self.metric == "acc" else 3
        return (
            f"{split} {self.metric} {self.mean:.{digits}f} ± {self.ci95:.{digits}f} "
            f"(95% CI, {self.episodes} episodes)"
        )

    def metrics(self, split: str) -> dict[str, float]:
        return {f"{split}/{self.metric}": self.mean, f"{split}/{self.metric}_ci95": self.ci95}

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@torch.no_grad()
def evaluate(
    learner: MetaLearner,
    episodes: FixedEpisodes,
    task: TaskSpec,
    runtime: Runtime,
    batch_size: int,
) -> EvalResult:
    was_training = learner.training
    learner.eval()
    mine = runtime.shard(len(episodes))
    try:
        scores = [torch.zeros(0, device=runtime.device)]
        for batch in episodes.batches(batch_size, mine):
            batch = batch.to(runtime.device, non_blocking=True)
            with runtime.autocast(learner.autocast_safe):
                predictions = learner.predict(batch)
            scores.append(task.score(predictions.float(), batch.query_y))
    finally:
        learner.train(was_training)
    every = runtime.concat_shards(torch.cat(scores), len(episodes))
    mean, ci95 = mean_and_ci95(every.cpu())
    return EvalResult(task.metric, mean, ci95, len(episodes))
