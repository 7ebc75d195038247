"""Mean and 95% confidence interval across a handful of training seeds.

A run's own test interval is over hundreds of episodes, where the normal quantile 1.96 is right
(``training/evaluate.py``). Across seeds n is 2 to 10, where 1.96 understates the interval badly
(two seeds need 12.71), so this interval uses Student's t quantile for n - 1 degrees of freedom.
The quantiles come from a table rather than SciPy: one number does not justify the dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_975 = 1.959964  # the normal quantile: t's limit as the degrees of freedom grow

# Two-sided 95% (upper 0.975) quantiles of Student's t, by degrees of freedom.
T_975: dict[int, float] = {
    1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706,
    6: 2.4469, 7: 2.3646, 8: 2.3060, 9: 2.2622, 10: 2.2281,
    11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314,
    16: 2.1199, 17: 2.1098, 18: 2.1009, 19: 2.0930, 20: 2.0860,
    21: 2.0796, 22: 2.0739, 23: 2.0687, 24: 2.0639, 25: 2.0595,
    26: 2.0555, 27: 2.0518, 28: 2.0484, 29: 2.0452, 30: 2.0423,
    40: 2.0211, 60: 2.0003, 120: 1.9799,
}  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t's 0.975 quantile: tabulated up to 30 degrees of freedom, and beyond that linear in
    1/df between the tabulated 40, 60, 120 and the normal limit (within 0.001)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df in T_975:
        return T_975[df]
    known = sorted(T_975)
    lower = max(d for d in known if d < df)
    upper = min((d for d in known if d > df), default=None)
    x, x_lower = 1 / df, 1 / lower
    x_upper, q_upper = (1 / upper, T_975[upper]) if upper is not None else (0.0, Z_975)
    weight = (x - x_upper) / (x_lower - x_upper)
    return q_upper + weight * (T_975[lower] - q_upper)


@dataclass(frozen=True)
class SeedStats:
    """Summary of one configuration's test means over its seeds."""

    n: int
    mean: float
    std: float | None  # sample standard deviation; None for one seed
    ci95: float | None  # half-width; None for one seed, which says nothing about seed noise


def across_seeds(values: Sequence[float]) -> SeedStats:
    """Mean, sample std and the t-based 95% interval ``t(n-1) * std / sqrt(n)``."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = math.fsum(values) / n
    if n == 1:
        return SeedStats(1, mean, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return SeedStats(n, mean, std, t_quantile_975(n - 1) * std / math.sqrt(n))
