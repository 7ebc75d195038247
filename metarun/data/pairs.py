"""Same/different pairs from an episode: the training data of a Siamese network.

Koch, Zemel & Salakhutdinov (2015) train a verification network on minibatches of image pairs
labelled "same class" or "different class", half of each. Here those pairs are cut from an
ordinary training episode, so the sampler and the trainer stay the ones every learner uses; the
learner chooses the episode shape (e.g. 64 ways x (1 shot + 1 query) for Koch's 128 pairs).

The scheme is deterministic given the episode: the episode's classes are already a random draw,
so no further randomness is needed. Each class ``c`` of an N-way K-shot Q-query episode gives
``R = max(K, Q)`` rounds; round ``r`` pairs query ``r mod Q`` of class ``c`` with

* shot ``r mod K`` of class ``c`` (same), and
* shot ``r mod K`` of class ``(c + 1) mod N`` (different),

so an episode gives ``2 N R`` pairs, exactly half of them "same", and every support and query
image takes part (each query in one same and one different pair per round).

A ``Pairs`` holds positions into the episode's support and query sets rather than images:
``take`` applies them to images or, as the learner does, to embeddings, so that each image goes
through the encoder once however many pairs it is in (the twin networks share their weights, so
an image's embedding does not depend on its partner).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metarun.data.episodes import EpisodeBatch


@dataclass(frozen=True)
class Pairs:
    """``P`` pairs per episode of a meta-batch of ``B``: all tensors are ``[B, P]``."""

    left: Tensor
    """Positions in the episode's support set (``support_x[b, left[b, p]]``)."""
    right: Tensor
    """Positions in the episode's query set (``query_x[b, right[b, p]]``)."""
    same: Tensor
    """True where the two sides share a class."""

    def take(self, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """The pairs' two sides ``[B, P, ...]`` from per-episode support ``[B, S, ...]`` and query
        ``[B, M, ...]`` tensors: images, or their embeddings."""
        episodes = torch.arange(support.shape[0], device=support.device)[:, None]
        return support[episodes, self.left], query[episodes, self.right]


def episode_pairs(batch: EpisodeBatch) -> Pairs:
    """Balanced same/different pairs from every episode of ``batch`` (scheme in the module
    docstring). Positions follow the episodes' labels, so any order of examples works. Shots
    may differ between classes (variable episodes): class ``c`` then gives
    ``max(K_c, Q)`` rounds, its different pairs cycling through the shots of class ``c + 1``."""
    ways = batch.ways
    queries = batch.query_y.shape[1]
    if ways < 2:
        raise ValueError(f"different-class pairs need episodes of at least 2 ways, got {ways}")
    device = batch.support_y.device
    counts = torch.stack([torch.bincount(y, minlength=ways) for y in batch.support_y])
    if queries % ways or (counts != counts[0]).any() or not counts[0].all():
        raise ValueError(
            f"{queries} query examples do not split evenly over {ways} ways, or the episodes' "
            f"support sets differ in their shots per class"
        )
    shots, per_class = counts[0], queries // ways
    rounds = shots.clamp(min=per_class)  # max(K_c, Q)
    cls = torch.arange(ways, device=device).repeat_interleave(rounds)  # [sum R_c]
    first_round = torch.cumsum(rounds, 0) - rounds
    round_ = torch.arange(len(cls), device=device) - first_round[cls]
    first_shot = torch.cumsum(shots, 0) - shots  # positions among the label-sorted support
    other = (cls + 1) % ways
    query = cls * per_class + round_ % per_class  # positions among the label-sorted queries
    same_support = first_shot[cls] + round_ % shots[cls]
    other_support = first_shot[other] + round_ % shots[other]
    # Where the sorted positions are in each episode: the identity for label-major episodes.
    support_order = batch.support_y.argsort(dim=1, stable=True)
    query_order = batch.query_y.argsort(dim=1, stable=True)
    half = cls.numel()
    return Pairs(
        left=support_order[:, torch.cat([same_support, other_support])],
        right=query_order[:, torch.cat([query, query])],
        same=torch.arange(2 * half, device=device).lt(half).expand(len(batch), -1),
    )
