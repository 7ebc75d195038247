"""Inductive or transductive: does a learner's answer for one query depend on the others?

A transductive learner uses the query set as a whole when it predicts: MAML and its family
normalise with the statistics of the batch they are given (the authors' code does, at test
time too), so each query's answer depends on which other queries share its episode. Its scores
are not comparable, as such, to an inductive learner's, which answers each query alone: a
comparison should say which is which (Nichol et al. 2018 report Reptile both ways).

Rather than a flag per learner that could drift from what the code does, the run measures it:
on its first test episode, predict the last query twice, once as drawn and once with every other
query changed (``2x + 1``: other values, other mean and spread). If its output moves, the
learner is transductive. The last query is the one to hold fixed because a sequence learner
(SNAIL, MANN) sees the queries before it.
"""

from __future__ import annotations

import dataclasses

import torch

from metarun.algorithms.base import MetaLearner
from metarun.data.episodes import FixedEpisodes, one_at_a_time
from metarun.data.task import TaskSpec

INDUCTIVE, TRANSDUCTIVE = "inductive", "transductive"
TOLERANCE = 1e-4  # relative change of the held query's outputs that counts as dependence


@torch.no_grad()
def inference_kind(
    learner: MetaLearner, episodes: FixedEpisodes, task: TaskSpec, device: torch.device
) -> str | None:
    """``"inductive"`` or ``"transductive"`` as measured on the first episode; None for tasks
    acted in (no query set) or an episode of a single query (nothing to vary)."""
    if task.kind == "control" or len(episodes) == 0:
        return None
    first = one_at_a_time(next(episodes.batches(1)))[0].to(device)
    if first.query_x.shape[1] < 2:
        return None
    was_training = learner.training
    learner.eval()
    try:
        held = learner.predict(first)[:, -1].float()
        others = first.query_x.clone()
        others[:, :-1] = 2 * others[:, :-1] + 1
        moved = learner.predict(dataclasses.replace(first, query_x=others))[:, -1].float()
    finally:
        learner.train(was_training)
    change = (moved - held).abs().max()
    return TRANSDUCTIVE if change > TOLERANCE * (1 + held.abs().max()) else INDUCTIVE
