"""PPO's losses (Schulman, Wolski, Dhariwal, Radford & Klimov 2017, arXiv 1707.06347), one
function per detail, so a learner names each one it uses.

The details and their defaults follow CleanRL's ``ppo.py`` (``vwxyzjn/cleanrl``,
``cleanrl/ppo.py``), read for the facts: advantages normalised per minibatch (mean 0, std 1, with
1e-8 in the denominator), the clipped surrogate ``max(-A r, -A clip(r, 1 - eps, 1 + eps))``
averaged, the value loss ``0.5 (V - R)^2`` optionally clipped to ``eps`` around the value the
rollout predicted (the larger of the clipped and unclipped squared errors), and explained
variance as a diagnostic. Losses here are to be minimised.
"""

from __future__ import annotations

import torch
from torch import Tensor


def normalise(advantages: Tensor, eps: float = 1e-8) -> Tensor:
    """Advantages with mean 0 and standard deviation 1 over all their elements: the gradient's
    scale then does not depend on the rewards' scale (CleanRL's ``norm_adv``)."""
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def clipped_surrogate(
    log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, clip: float
) -> Tensor:
    """PPO's clipped policy loss, ``mean(max(-A r, -A clip(r, 1 - clip, 1 + clip)))`` with
    ``r = exp(log_prob - old_log_prob)``: a step gains nothing by moving the ratio beyond the
    clip in the direction the advantage favours, and is not stopped from moving it back."""
    ratio = (log_prob - old_log_prob).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    return torch.max(unclipped, clipped).mean()


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float | None) -> Tensor:
    """``0.5 mean((V - R)^2)``; with ``clip``, each error is the larger of the unclipped one and
    that of ``old + clamp(V - old, -clip, clip)`` (PPO's value clipping, as in OpenAI baselines
    and CleanRL's ``clip_vloss``); ``None`` turns clipping off."""
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped.mean()
    moved = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.max(unclipped, (moved - returns) ** 2).mean()


def explained_variance(predicted: Tensor, target: Tensor) -> Tensor:
    """``1 - Var(target - predicted) / Var(target)``: 1 for a perfect value function, 0 for a
    constant one (NaN when the targets do not vary)."""
    variance = target.var()
    return 1.0 - (target - predicted).var() / variance
