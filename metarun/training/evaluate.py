"""Scoring a learner on a fixed set of episodes: mean and 95% confidence interval.

The interval is the normal approximation used throughout the few-shot literature,
``mean ± 1.96 · std / sqrt(n)`` over per-episode scores (sample standard deviation).

With several processes (``hardware=ddp``) each scores its own contiguous share of the episodes
and the scores are concatenated in episode order, so every process gets the result a single
process would: an episode's score does not depend on which episodes share its batch (each
learner adapts each episode on its own, and whatever it draws comes from one fixed key,
``metarun.randomness.EVALUATION_KEY``; ``tests/algorithms/test_every_learner.py`` checks this
for every learner).

Trials (tasks you act in, ``metarun.envs``) are scored by playing them with the learner's policy
(``metarun.envs.evaluate.play``): the score of a trial is its total return; the result also
keeps the mean return of each episode of the trials (does the agent improve within a task?) and,
for bandits, the pseudo-regret.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from metarun.algorithms.base import MetaLearner
from metarun.data.episodes import EpisodeList, FixedEpisodes
from metarun.data.task import TaskSpec
from metarun.envs.evaluate import play
from metarun.envs.trials import Trials
from metarun.hardware import Runtime
from metarun.intervals import formatted, mean_and_ci95


@dataclass(frozen=True)
class EvalResult:
    metric: str
    mean: float
    ci95: float
    episodes: int
    unit: str = "episodes"  # what was counted: "episodes", or "trials" of tasks you act in
    extra: dict[str, float] = field(default_factory=dict)  # regret, first and last episode
    episode_returns: list[float] = field(default_factory=list)  # trials: mean per episode
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Multi-source episodes: per source its ``mean``, ``ci95``, ``episodes`` and whether it
    was ``held_out`` (never trained on: out of domain)."""
    per_episode: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)
    """Every episode's ``score`` (and, for trials, ``regret``), in episode order: the rows of
    ``episodes.csv``; not part of ``summary.json``."""

    def line(self, split: str) -> str:
        """``test acc 97.9 ± 0.3 (95% CI, 600 episodes)``, ``test return 6.62 ± 0.05 (95% CI,
        1000 trials)``."""
        mean, ci95 = formatted(self.metric, self.mean), formatted(self.metric, self.ci95)
        line = f"{split} {self.metric} {mean} ± {ci95} (95% CI, {self.episodes} {self.unit})"
        for name in ("regret", "first_episode", "last_episode"):
            if name in self.extra:
                value, ci95 = self.extra[name], self.extra[f"{name}_ci95"]
                line += f", {name.replace('_', ' ')} {value:.2f} ± {ci95:.2f}"
        return line

    def source_lines(self, split: str) -> list[str]:
        """One line per source: ``test acc on omniglot (held out) 61.2 ± 0.9 (95% CI, 600
        episodes)``."""
        lines = []
        for name, own in self.sources.items():
            mean, ci95 = formatted(self.metric, own["mean"]), formatted(self.metric, own["ci95"])
            where = "held out" if own["held_out"] else "in domain"
            lines.append(
                f"{split} {self.metric} on {name} ({where}) {mean} ± {ci95} (95% CI, "
                f"{own['episodes']} {self.unit})"
            )
        return lines

    def metrics(self, split: str) -> dict[str, float]:
        return {
            f"{split}/{self.metric}": self.mean,
            f"{split}/{self.metric}_ci95": self.ci95,
            **{f"{split}/{name}": value for name, value in self.extra.items()},
            **{
                f"{split}/{name}/{self.metric}{suffix}": own[key]
                for name, own in self.sources.items()
                for key, suffix in (("mean", ""), ("ci95", "_ci95"))
            },
        }

    def as_dict(self) -> dict[str, Any]:
        """Every field, but the optional ones (``extra``, ``episode_returns``, ``sources``)
        only when they hold something."""
        kept = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "per_episode"}
        optional = ("extra", "episode_returns", "sources")
        return {k: copy.deepcopy(v) for k, v in kept.items() if v or k not in optional}


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
    columns: dict[str, list[Tensor]] = {"score": [torch.zeros(0, device=runtime.device)]}
    try:
        for batch in episodes.batches(batch_size, mine):
            batch = batch.to(runtime.device, non_blocking=True)
            with runtime.autocast(learner.autocast_safe):
                scored = scores(learner, batch, task)
            for name, values in scored.items():
                columns.setdefault(name, []).append(values.double())
    finally:
        learner.train(was_training)
    every = {
        name: runtime.concat_shards(torch.cat(parts), len(episodes)).cpu()
        for name, parts in columns.items()
    }
    mean, ci95 = mean_and_ci95(every["score"])
    rows = {name: every[name] for name in ("score", "regret") if name in every}
    if task.kind != "control":
        by_source = per_source(episodes, every["score"])
        return EvalResult(
            task.metric, mean, ci95, len(episodes), sources=by_source, per_episode=rows
        )
    extra = {}
    if "regret" in every:
        extra["regret"], extra["regret_ci95"] = mean_and_ci95(every["regret"])
    by_episode = every["episode_returns"]
    if by_episode.shape[1] > 1:  # does the learner improve within a trial, and by how much
        extra["first_episode"], extra["first_episode_ci95"] = mean_and_ci95(by_episode[:, 0])
        extra["last_episode"], extra["last_episode_ci95"] = mean_and_ci95(by_episode[:, -1])
    returns = by_episode.mean(dim=0).tolist()
    return EvalResult(
        task.metric, mean, ci95, len(episodes), "trials", extra, returns, per_episode=rows
    )


def per_source(episodes: FixedEpisodes, scores: Tensor) -> dict[str, dict[str, Any]]:
    """Mean and interval of each source's episodes, for multi-source episodes (a sampler with
    ``source_names``); empty otherwise."""
    sampler = episodes.sampler
    names = getattr(sampler, "source_names", None)
    if names is None:
        return {}
    of_episode = sampler.source_of(episodes.plan)  # type: ignore[attr-defined]
    results = {}
    for index in of_episode.unique().tolist():
        mean, ci95 = mean_and_ci95(scores[of_episode == index])
        name = names[index]
        results[name] = {
            "mean": mean,
            "ci95": ci95,
            "episodes": int((of_episode == index).sum()),
            "held_out": name in sampler.held_out,  # type: ignore[attr-defined]
        }
    return results


def scores(learner: MetaLearner, batch: Any, task: TaskSpec) -> dict[str, Tensor]:
    """Per-episode columns of one batch: ``score``, and for trials ``episode_returns``
    ``[B, episodes]`` and (bandits) ``regret``. Episodes of different shapes (an
    ``EpisodeList``) are scored one at a time."""
    if isinstance(batch, EpisodeList):
        return {"score": torch.cat([scores(learner, e, task)["score"] for e in batch.episodes])}
    if not isinstance(batch, Trials):
        predictions = learner.predict(batch)
        return {"score": task.score(predictions.float(), batch.query_y)}
    played = play(learner.policy(), batch.make())  # type: ignore[attr-defined]
    columns = {
        "score": played.episode_returns.sum(dim=1),
        "episode_returns": played.episode_returns,
    }
    if played.regret is not None:
        columns["regret"] = played.regret
    return columns
