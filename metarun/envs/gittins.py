"""Gittins indices of a Bernoulli arm with a Beta prior, computed by calibration.

The index of an arm in posterior state (``s`` successes, ``f`` failures on a Beta(a, b) prior)
with ``r`` pulls left is the retirement reward ``lambda`` per step at which a player facing only
this arm is indifferent between retiring now (earning ``lambda`` on each of the ``r`` steps,
discounted by ``gamma``) and pulling it once more and then playing optimally between pulling and
retiring (Gittins 1979; the calibration or "retirement" formulation of Whittle 1980; with a
finite horizon this is the finite-horizon Gittins index of Niño-Mora 2011, "Computing a classic
index for finite-horizon bandits", INFORMS J. Computing 23(2)). Playing the arm of largest index
is Bayes-optimal for the infinite discounted problem and a close approximation with a finite
horizon, which is RL²'s setting (n pulls, undiscounted); RL² (Duan et al. 2016, Table 1)
compares against it. Which horizon or discount the paper used for it is not something
that could be checked here (no copy of the paper was found); the default here, ``discount=1``
with the trial's remaining pulls, is the index of the trial's own objective.

How: for a grid of ``lambda`` values at once, backward induction over the pulls left gives the
value of the stopping problem in every posterior state, ``V_r = max(lambda * R_r, Q_r)`` with
``Q_r = p (1 + gamma V_{r-1}(s + 1, f)) + (1 - p) gamma V_{r-1}(s, f + 1)``, ``p = (s + a) /
(s + f + a + b)`` and ``R_r = 1 + gamma + ... + gamma^(r-1)``. ``Q_r - lambda R_r`` falls
strictly in ``lambda`` (its slope is at most ``-1``), so each state's index is where it crosses
zero: found between two grid points and linearly interpolated (exact where ``Q_r`` has no kink
between them; ``Q_r`` is piecewise linear in ``lambda``). Only states reachable with ``r`` pulls
left (``s + f <= horizon - r``) are kept, so the whole table costs about ``grid * horizon^3 / 3``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.errors import ConfigError


def gittins_indices(
    horizon: int,
    discount: float = 1.0,
    prior: tuple[float, float] = (1.0, 1.0),
    grid: int = 257,
) -> Tensor:
    """``[horizon + 1, horizon + 1, horizon + 1]`` float64: ``index[r, s, f]`` for ``r >= 1``
    pulls left after ``s`` successes and ``f`` failures (NaN where unreachable, and at
    ``r = 0``)."""
    if horizon < 1:
        raise ConfigError("dataset.pulls", f"must be at least 1, got {horizon}")
    if not 0 < discount <= 1:
        raise ConfigError("algorithm.discount", f"must be in (0, 1], got {discount}")
    if grid < 2:
        raise ConfigError("algorithm.grid", f"must be at least 2, got {grid}")
    a, b = prior
    lam = torch.linspace(0.0, 1.0, grid, dtype=torch.float64)[:, None, None]
    n = horizon
    index = torch.full((n + 1, n + 1, n + 1), float("nan"), dtype=torch.float64)
    # V_0 = 0 on every state with s + f <= n (a (n + 1)^2 square holds them).
    value = torch.zeros(grid, n + 1, n + 1, dtype=torch.float64)
    retire = torch.zeros((), dtype=torch.float64)
    for r in range(1, n + 1):
        size = n - r + 1  # states with s, f <= n - r: those with s + f <= n - r among them
        s = torch.arange(size, dtype=torch.float64)[:, None]
        f = torch.arange(size, dtype=torch.float64)[None, :]
        p = (s + a) / (s + f + a + b)
        win = value[:, 1 : size + 1, :size]
        loss = value[:, :size, 1 : size + 1]
        q = p * (1.0 + discount * win) + (1.0 - p) * discount * loss
        retire = 1.0 + discount * retire
        gap = q - lam * retire  # falls in lambda; positive at 0, negative at 1
        above = (gap > 0).sum(dim=0).clamp(1, grid - 1)  # first grid point at or below zero
        g_low = gap.gather(0, (above - 1)[None]).squeeze(0)
        g_high = gap.gather(0, above[None]).squeeze(0)
        l_low = lam.flatten()[above - 1]
        step = 1.0 / (grid - 1)
        crossing = l_low + step * g_low / (g_low - g_high)
        reachable = (s + f) <= (n - r)
        index[r, :size, :size] = torch.where(reachable, crossing, torch.nan)
        value = torch.maximum(q, lam * retire)
    return index


class GittinsTable:
    """Looks indices up for a batch of arms: ``table(left, successes, failures)``."""

    def __init__(self, horizon: int, discount: float = 1.0, grid: int = 257) -> None:
        self.horizon = horizon
        self.table = gittins_indices(horizon, discount, grid=grid)

    def __call__(self, left: int, successes: Tensor, failures: Tensor) -> Tensor:
        if self.table.device != successes.device:
            self.table = self.table.to(successes.device)
        return self.table[left][successes.long(), failures.long()]
