"""Gittins indices by calibration, against a by-hand value and an independent recursion."""

from __future__ import annotations

import functools

import pytest

from metarun.envs.gittins import gittins_indices
from metarun.errors import ConfigError


def test_one_pull_left_is_the_posterior_mean() -> None:
    index = gittins_indices(6)
    for s, f in [(0, 0), (2, 1), (0, 5), (3, 2)]:
        assert index[1, s, f].item() == pytest.approx((s + 1) / (s + f + 2), abs=1e-12)


def test_two_pulls_left_by_hand() -> None:
    # At the prior with two pulls left: retiring pays 2 lambda; pulling pays 1/2 now and then
    # either the winner's mean 2/3 (after a success) or lambda (after a failure, 1/3 < lambda),
    # so 2 lambda = 1/2 (1 + 2/3) + 1/2 lambda, lambda = 5/9.
    assert gittins_indices(2)[2, 0, 0].item() == pytest.approx(5 / 9, abs=1e-9)


def calibrated(s: int, f: int, left: int, discount: float, steps: int = 60) -> float:
    """The index by bisection on lambda with a memoised recursion: slow, and independent."""

    def continue_minus_retire(lam: float) -> float:
        @functools.cache
        def value(s: int, f: int, r: int) -> float:
            if r == 0:
                return 0.0
            retire = lam * sum(discount**i for i in range(r))
            return max(retire, pull(s, f, r))

        def pull(s: int, f: int, r: int) -> float:
            p = (s + 1) / (s + f + 2)
            return p * (1 + discount * value(s + 1, f, r - 1)) + (1 - p) * discount * value(
                s, f + 1, r - 1
            )

        return pull(s, f, left) - lam * sum(discount**i for i in range(left))

    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if continue_minus_retire(middle) > 0 else (low, middle)
    return (low + high) / 2


@pytest.mark.parametrize("discount", [1.0, 0.9])
def test_table_matches_an_independent_recursion(discount: float) -> None:
    index = gittins_indices(8, discount, grid=1025)
    for s, f, left in [(0, 0, 8), (1, 0, 5), (0, 2, 6), (2, 3, 3), (4, 0, 4)]:
        assert index[left, s, f].item() == pytest.approx(calibrated(s, f, left, discount), abs=2e-4)


def test_indices_grow_with_successes_and_pulls_left() -> None:
    index = gittins_indices(10, grid=129)
    assert index[5, 2, 1] > index[5, 1, 1] > index[5, 1, 2]
    assert index[9, 0, 0] > index[5, 0, 0] > index[1, 0, 0]


def test_discounted_classic_value() -> None:
    # The classic tables of Bernoulli indices (Gittins, Glazebrook & Weber 2011, "Multi-armed
    # Bandit Allocation Indices", ch. 8) give 0.7029 for a Beta(1, 1) arm at discount 0.9, a
    # value recalled rather than read here; 100 pulls left at grid 1025 computes 0.7029 too.
    # 40 pulls left is close to the infinite horizon (0.9^40 = 0.015).
    index = gittins_indices(40, 0.9, grid=513)
    assert index[40, 0, 0].item() == pytest.approx(0.7029, abs=0.002)


def test_bad_settings_name_their_key() -> None:
    with pytest.raises(ConfigError, match="dataset.pulls"):
        gittins_indices(0)
    with pytest.raises(ConfigError, match="algorithm.discount"):
        gittins_indices(5, discount=0.0)
