"""Draws that ``metarun.randomness`` does not have yet, from keys: Gamma, Beta, Dirichlet,
a categorical choice and an argmax that breaks ties at random.

``torch.distributions`` draws Gamma variates from torch's global generator, which a trial may not
touch (its numbers would then depend on its batch). Here a Gamma variate of shape 1 is a unit
exponential, and any other is Marsaglia & Tsang's (2000, "A simple method for generating gamma
variables", ACM TOMS 26(3)) rejection sampler without the squeeze. Element ``i`` of a key's draws
takes its proposal ``r`` from ``fold(fold(key, i), r)`` and keeps its first accepted one, so its
value depends on its key alone; the loop redraws only the rejected until none is left (the
acceptance rate is above 95% for shapes of at least 1, so the rounds after the first are short).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metarun.randomness import fold, uniform

MAX_ROUNDS = 64
"""Proposals per element before giving up: a rejection has probability < 0.05 per round, so
reaching this is a bug, never bad luck."""


def gamma(key: Tensor, shape: Tensor) -> Tensor:
    """Gamma(``shape``, 1) variates, float64, of ``shape``'s shape ``key.shape + S``: element
    ``i`` of a key's ``S`` draws from ``fold(key, i)``, so it depends on its key alone."""
    shape = shape.to(torch.float64)
    extra = shape.shape[key.dim() :]
    lanes = key.reshape(*key.shape, *([1] * len(extra))).expand(shape.shape)
    position = torch.arange(shape[(0,) * key.dim()].numel(), device=key.device).view(extra)
    keys = fold(lanes, position).flatten()
    alpha = shape.flatten()
    small = alpha < 1
    boosted = torch.where(small, alpha + 1, alpha)  # Gamma(a) = Gamma(a + 1) * U ** (1 / a)
    d = boosted - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    # Gamma(1) is a unit exponential: one uniform, no rejection (the flat Dirichlet prior's
    # counts, the most common shape by far in PSRL's posteriors).
    exponential = alpha == 1
    result = torch.zeros_like(alpha)
    at = torch.nonzero(exponential).flatten()
    result[at] = -torch.log(1.0 - uniform(fold(keys[at], -2), (), torch.float64))
    pending = torch.nonzero(~exponential).flatten()
    for round_ in range(MAX_ROUNDS):
        u1, u2, u3 = (1.0 - uniform(fold(keys[pending], round_), (3,), torch.float64)).unbind(-1)
        x = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)  # Box-Muller
        u = u3  # (0, 1], like u1 and u2
        dp, cp = d[pending], c[pending]
        v = (1.0 + cp * x) ** 3
        positive = v > 0
        log_v = torch.log(torch.where(positive, v, torch.ones_like(v)))
        accept = positive & (torch.log(u) < 0.5 * x * x + dp - dp * v + dp * log_v)
        result[pending[accept]] = (dp * v)[accept]
        pending = pending[~accept]
        if pending.numel() == 0:
            break
    if pending.numel() > 0:
        raise RuntimeError("the Gamma sampler rejected a proposal 64 times in a row")
    if bool(small.any()):
        u = 1.0 - uniform(fold(keys, -1), (), torch.float64)
        result = torch.where(small, result * u ** (1.0 / alpha), result)
    return result.view(shape.shape)


def beta(key: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Beta(``a``, ``b``) variates as ``X / (X + Y)`` with independent Gamma(a), Gamma(b)."""
    x = gamma(fold(key, 0x0A), a)
    y = gamma(fold(key, 0x0B), b)
    return x / (x + y)


def dirichlet(key: Tensor, concentration: Tensor) -> Tensor:
    """Dirichlet variates over the last dimension of ``concentration``."""
    g = gamma(key, concentration)
    return g / g.sum(dim=-1, keepdim=True)


def categorical(key: Tensor, probs: Tensor) -> Tensor:
    """One index per row of ``probs`` (``key.shape + (n,)``, rows summing to 1), int64."""
    u = uniform(key, (), torch.float64).to(probs.device)
    edges = probs.to(torch.float64).cumsum(dim=-1)
    return (edges <= u.unsqueeze(-1)).sum(dim=-1).clamp(max=probs.shape[-1] - 1)


def argmax_random_ties(values: Tensor, key: Tensor, tolerance: float = 1e-9) -> Tensor:
    """``values.argmax(-1)`` with the choice among values within ``tolerance`` of the maximum
    drawn at random from ``key`` (``values.shape[:-1]``): a fixed order would favour arm 0."""
    best = values.max(dim=-1, keepdim=True).values
    near = values >= best - tolerance
    noise = uniform(key, values.shape[key.dim() :], torch.float64)
    return torch.where(near, noise, torch.full_like(noise, -1.0)).argmax(dim=-1)
