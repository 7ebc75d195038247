"""Pictures of a learner on fixed episodes: those it draws itself (``Illustrated``), and for
tasks you act in the mean return of each episode of the trials (does the agent improve within a
task?), drawn from the evaluation's result for every acting learner and baseline alike."""

from __future__ import annotations

import torch

from metarun.algorithms.base import Illustrated, MetaLearner
from metarun.data.episodes import EpisodeList, FixedEpisodes
from metarun.hardware import Runtime
from metarun.pictures import new_figure, png_bytes
from metarun.tracking.logger import Logger
from metarun.training.evaluate import EvalResult


def illustrate(
    learner: MetaLearner,
    episodes: FixedEpisodes,
    runtime: Runtime,
    logger: Logger,
    step: int,
    split: str,
    result: EvalResult | None = None,
) -> None:
    """Log ``<split>/<name>`` for every picture the learner draws on the first
    ``figure_episodes`` of ``episodes`` (the same episodes at every step; like evaluation, any
    randomness comes from ``EVALUATION_KEY``). Rank 0 only; torch's generators are left as
    they were, so a run with pictures trains exactly as one without. ``result``: the
    evaluation just made on ``episodes``, whose per-episode returns (trials) are plotted as
    ``<split>/returns_by_episode``."""
    if not runtime.is_main:
        return
    if result is not None and len(result.episode_returns) > 1:
        name = getattr(learner, "name", type(learner).__name__)
        png = returns_by_episode(result.episode_returns, split, name)
        logger.image(f"{split}/returns_by_episode", png, step)
    if not isinstance(learner, Illustrated):
        return
    count = min(learner.figure_episodes, len(episodes))
    if count < 1:
        return
    batch = episodes.sampler.gather(episodes.plan[:count]).to(runtime.device)
    if isinstance(batch, EpisodeList):  # episodes of different shapes: the first one's
        batch = batch.episodes[0]
    was_training = learner.training
    learner.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            pictures = learner.figures(batch)
    finally:
        learner.train(was_training)
    for name, png in pictures.items():
        logger.image(f"{split}/{name}", png, step)


def returns_by_episode(means: list[float], split: str, learner: str) -> bytes:
    """The mean return of episode 1, 2, ... of the fixed trials, as a PNG."""
    figure = new_figure(4.5, 3.0)
    axes = figure.add_subplot()
    episodes = range(1, len(means) + 1)
    axes.plot(episodes, means, marker="o" if len(means) <= 30 else None, lw=1.5)
    axes.set_xlabel("episode of the trial")
    axes.set_ylabel("mean return")
    axes.set_title(f"{learner}: {split} return per episode", fontsize=10)
    axes.grid(alpha=0.3)
    return png_bytes(figure)
