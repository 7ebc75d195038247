from __future__ import annotations

import math

import pytest

from metarun.report.stats import T_975, Z_975, across_seeds, t_quantile_975


def exact_t_975(df: int) -> float:
    """Student's t 0.975 quantile from the regularised incomplete beta (mpmath ships with torch
    through sympy), to check the shipped table against."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 30

    def upper_tail(t):
        return 0.5 * mp.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True)

    return float(mp.findroot(lambda t: upper_tail(t) - 0.025, 2.0))


def test_the_table_holds_the_exact_quantiles() -> None:
    for df, quantile in T_975.items():
        assert quantile == pytest.approx(exact_t_975(df), abs=6e-5), df


@pytest.mark.parametrize("df", [31, 35, 45, 50, 75, 90, 150, 500, 10_000])
def test_between_table_rows_the_interpolation_is_within_a_thousandth(df: int) -> None:
    assert t_quantile_975(df) == pytest.approx(exact_t_975(df), abs=1e-3)


def test_quantiles_fall_towards_the_normal_one() -> None:
    values = [t_quantile_975(df) for df in range(1, 400)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] > Z_975 and t_quantile_975(10**9) == pytest.approx(Z_975, abs=1e-6)
    with pytest.raises(ValueError, match="at least 1"):
        t_quantile_975(0)


def test_across_seeds_uses_t_for_n_minus_one_degrees_of_freedom() -> None:
    values = [90.0, 94.0, 95.0]
    stats = across_seeds(values)
    std = math.sqrt(((90 - 93) ** 2 + (94 - 93) ** 2 + (95 - 93) ** 2) / 2)
    assert (stats.n, stats.mean) == (3, pytest.approx(93.0))
    assert stats.std == pytest.approx(std)
    assert stats.ci95 == pytest.approx(4.3027 * std / math.sqrt(3))
    two = across_seeds([50.0, 40.0])  # t(1) = 12.71: two seeds say little
    assert two.ci95 == pytest.approx(12.7062 * 5.0)


def test_one_seed_has_no_interval_and_none_is_an_error() -> None:
    single = across_seeds([71.5])
    assert (single.n, single.mean, single.std, single.ci95) == (1, 71.5, None, None)
    with pytest.raises(ValueError):
        across_seeds([])
