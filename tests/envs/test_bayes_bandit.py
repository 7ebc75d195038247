"""Exact expected returns: by hand, Gittins play against the Bayes-optimal value, and the
batched policies' Monte Carlo returns against their exact expectations."""

from __future__ import annotations

import pytest

from metarun.envs import BernoulliBandits
from metarun.envs.bandit_policies import Gittins, Greedy
from metarun.envs.bayes_bandit import bayes_optimal_return, index_policy_return
from metarun.envs.evaluate import FixedTrials, evaluate_policy
from metarun.envs.gittins import gittins_indices


def greedy_index(left: int, s: int, f: int) -> float:
    return (s + 1) / (s + f + 2)


def test_by_hand() -> None:
    assert bayes_optimal_return(1, 7) == pytest.approx(3.5)  # one uniform arm: 1/2 a pull
    # Two arms, two pulls: 1/2 now; after a success stay (2/3), after a failure switch (1/2).
    assert bayes_optimal_return(2, 2) == pytest.approx(1 / 2 + 1 / 3 + 1 / 4)
    assert index_policy_return(2, 2, greedy_index) == pytest.approx(1 / 2 + 1 / 3 + 1 / 4)


def test_gittins_play_is_bayes_optimal_at_ten_pulls_and_greedy_is_not() -> None:
    table = gittins_indices(10).tolist()
    optimal = bayes_optimal_return(5, 10)
    gittins = index_policy_return(5, 10, lambda r, s, f: table[r][s][f])
    assert gittins == pytest.approx(optimal, abs=1e-9)
    assert optimal == pytest.approx(6.66, abs=0.005)
    assert index_policy_return(5, 10, greedy_index) < optimal - 0.03


@pytest.mark.parametrize(
    ("make", "index"), [(Gittins, "gittins"), (Greedy, "greedy")], ids=["gittins", "greedy"]
)
def test_batched_play_agrees_with_its_exact_expectation(make, index: str) -> None:
    table = gittins_indices(10).tolist()
    scores = {"gittins": lambda r, s, f: table[r][s][f], "greedy": greedy_index}[index]
    exact = index_policy_return(5, 10, scores)
    trials = FixedTrials(BernoulliBandits(arms=5, pulls=10), 4000, 1)
    mean, ci95 = evaluate_policy(make, trials).mean_ci95
    # Three standard errors (0.11 here): a correct policy misses once in 370 draws of the
    # trials, and a mistake that costs 0.2 of return does not pass.
    assert abs(mean - exact) <= 3 * ci95 / 1.96
