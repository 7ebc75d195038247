"""Paired statistics for two learners scored on the same test episodes: the mean difference and
its interval, the paired t test, Wilcoxon's signed-rank test, and the share of episodes won.

Pairing removes the episode-to-episode variation both learners share (an easy episode is easy
for both), which two separate 95% intervals cannot. Everything here is plain Python, checked
against SciPy in the tests, because the package does not depend on SciPy:

* Student's t distribution through the regularised incomplete beta function, evaluated with
  its continued fraction (modified Lentz), as ``scipy.stats.ttest_rel`` reports it.
* Wilcoxon's signed-rank test as ``scipy.stats.wilcoxon(a, b, zero_method="wilcox",
  correction=False, method="approx")``: zero differences are dropped, tied absolute
  differences get their average rank, the statistic is min(W+, W-), and the two-sided p-value
  is the normal approximation with the tie correction, ``sd**2 = n(n+1)(2n+1)/24 - sum(t**3 -
  t)/48`` over the groups of t tied ranks (no continuity correction).

Differences are rounded to ``TIE_DECIMALS`` decimals before zeros, ties and wins are counted, so
that 14/15 - 13/15 and 13/15 - 12/15, equal on paper, tie although their floats differ in the
last bit (SciPy compares the raw floats; the tests give it the rounded differences).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from metarun.report.stats import t_quantile_975

TIE_DECIMALS = 12
ALL_ZERO = "every difference is zero (identical scores): p = 1 by convention, SciPy gives NaN"
ONE_EPISODE = "one episode: no interval and no test"
CONSTANT = "every difference is the same nonzero number: t is infinite, p = 0"


@dataclass(frozen=True)
class PairedStats:
    """The comparison of scores ``a`` with scores ``b`` (a - b), in the scores' units."""

    n: int  # episodes
    mean: float  # mean difference a - b
    ci95: float | None  # half-width of the t interval for the mean difference; None for n < 2
    t: float | None  # paired t statistic; None for n < 2
    t_p: float | None  # its two-sided p-value
    wilcoxon: float | None  # min(W+, W-) over the nonzero differences; None for n < 2
    wilcoxon_p: float | None  # two-sided, normal approximation with the tie correction
    nonzero: int  # differences the signed-rank test ranks (zeros are dropped)
    higher: int  # episodes where a scored more than b
    tied: int
    lower: int
    note: str | None = None  # an edge case worth a word (all zero, one episode)


def paired(a: Sequence[float], b: Sequence[float]) -> PairedStats:
    """``a`` and ``b`` are aligned: ``a[i]`` and ``b[i]`` scored the same episode."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        raise ValueError("no episodes to compare")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    rounded = [round(d, TIE_DECIMALS) for d in diffs]
    higher = sum(d > 0 for d in rounded)
    lower = sum(d < 0 for d in rounded)
    counts = {"higher": higher, "tied": n - higher - lower, "lower": lower}
    mean = math.fsum(diffs) / n
    if n < 2:
        untested = (None, None, None, None, None)  # ci95, t, t_p, wilcoxon, wilcoxon_p
        return PairedStats(1, mean, *untested, higher + lower, **counts, note=ONE_EPISODE)
    if not higher and not lower:
        return PairedStats(n, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0, **counts, note=ALL_ZERO)
    t, t_p, half = paired_t(diffs)
    statistic, w_p, nonzero = signed_rank(rounded)
    note = CONSTANT if math.isinf(t) else None
    return PairedStats(n, mean, half, t, t_p, statistic, w_p, nonzero, **counts, note=note)


def paired_t(diffs: Sequence[float]) -> tuple[float, float, float]:
    """(t, two-sided p, half-width of the 95% interval) of the mean of ``diffs``, n >= 2."""
    n = len(diffs)
    mean = math.fsum(diffs) / n
    std = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = std / math.sqrt(n)
    half = t_quantile_975(n - 1) * se
    if se == 0:
        return math.copysign(math.inf, mean), 0.0, half
    t = mean / se
    return t, t_two_sided_p(t, n - 1), half


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: I_x(df/2, 1/2) with
    x = df / (df + t^2), and 1 - x computed as t^2 / (df + t^2) so a tiny t keeps its digits."""
    if math.isinf(t):
        return 0.0
    t2 = t * t
    if math.isinf(t2):
        return 0.0
    return min(1.0, betainc(df / 2, 0.5, df / (df + t2), t2 / (df + t2)))


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """The regularised incomplete beta function I_x(a, b); ``y`` is 1 - x when the caller
    knows it more precisely. The continued fraction converges fast below the mean
    (a+1)/(a+b+2); above it, the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) is used."""
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    front = math.exp(log_front)
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, y) / b


EPS = 1e-16
TINY = 1e-300
MAX_TERMS = 100_000


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method (Numerical Recipes
    6.4): terms d_{2m} = m(b-m)x / ((a+2m-1)(a+2m)), d_{2m+1} = -(a+m)(a+b+m)x /
    ((a+2m)(a+2m+1))."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > TINY else TINY)
    h = d
    for m in range(1, MAX_TERMS):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > TINY else TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > TINY else TINY
            h *= d * c
        if abs(d * c - 1.0) < EPS:
            return h
    raise ArithmeticError(f"incomplete beta fraction did not converge for a={a}, b={b}, x={x}")


def average_ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Ranks 1..n of ``values``, tied values sharing their average rank, and the size of every
    group of ties (for the variance correction)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    groups = []
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        groups.append(end - start + 1)
        start = end + 1
    return ranks, groups


def signed_rank(diffs: Sequence[float]) -> tuple[float, float, int]:
    """(min(W+, W-), two-sided p, nonzero count) of Wilcoxon's test, zero differences dropped;
    p = 1 when nothing is left to rank."""
    kept = [d for d in diffs if d != 0]
    n = len(kept)
    if n == 0:
        return 0.0, 1.0, 0
    ranks, groups = average_ranks([abs(d) for d in kept])
    w_plus = math.fsum(r for r, d in zip(ranks, kept, strict=True) if d > 0)
    w_minus = math.fsum(r for r, d in zip(ranks, kept, strict=True) if d < 0)
    statistic = min(w_plus, w_minus)
    mean = n * (n + 1) / 4
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24 - sum(t**3 - t for t in groups) / 48)
    z = (statistic - mean) / sd
    return statistic, math.erfc(abs(z) / math.sqrt(2)), n
