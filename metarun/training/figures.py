"""Pictures of a learner on fixed episodes, for learners that draw them (``Illustrated``)."""

from __future__ import annotations

import torch

from metarun.algorithms.base import Illustrated, MetaLearner
from metarun.data.episodes import FixedEpisodes
from metarun.hardware import Runtime
from metarun.tracking.logger import Logger


def illustrate(
    learner: MetaLearner,
    episodes: FixedEpisodes,
    runtime: Runtime,
    logger: Logger,
    step: int,
    split: str,
) -> None:
    """Log ``<split>/<name>`` for every picture the learner draws on the first
    ``figure_episodes`` of ``episodes`` (the same episodes at every step; like evaluation, any
    randomness comes from ``EVALUATION_KEY``). Rank 0 only; torch's generators are left as
    they were, so a run with pictures trains exactly as one without."""
    if not isinstance(learner, Illustrated) or not runtime.is_main:
        return
    count = min(learner.figure_episodes, len(episodes))
    if count < 1:
        return
    batch = episodes.sampler.gather(episodes.plan[:count]).to(runtime.device)
    was_training = learner.training
    learner.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            pictures = learner.figures(batch)
    finally:
        learner.train(was_training)
    for name, png in pictures.items():
        logger.image(f"{split}/{name}", png, step)
