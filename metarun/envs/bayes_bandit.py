"""Exact expected returns on Bernoulli bandits with uniform arms, with no sampling noise.

With arm probabilities uniform in [0, 1] (Beta(1, 1)) and ``n`` pulls, the Bayes-optimal
expected total reward is a dynamic programme over posterior states (Bellman 1956; Gittins
1979): the state is each arm's ``(successes, failures)``, a pull of an arm in state ``(s, f)``
pays 1 with probability ``(s + 1) / (s + f + 2)``, and arms are exchangeable, so a state can be
kept sorted. The same recursion with the arm fixed by a policy gives that policy's exact
expected return. Small problems only (k = 5 arms and 10 pulls take 20 ms, 20 pulls 5 s): this is the
yardstick that says how close Gittins-index play comes to optimal, where Monte Carlo trials
could not separate them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from metarun.envs.base import at_least

State = tuple[tuple[int, int], ...]


def _moves(state: State, arm: int) -> tuple[float, State, State]:
    s, f = state[arm]
    p = (s + 1) / (s + f + 2)
    win = tuple(sorted(state[:arm] + ((s + 1, f),) + state[arm + 1 :]))
    loss = tuple(sorted(state[:arm] + ((s, f + 1),) + state[arm + 1 :]))
    return p, win, loss


def bayes_optimal_return(arms: int, pulls: int) -> float:
    """The largest expected total reward any policy earns, averaged over the uniform prior."""
    at_least("dataset.arms", arms)
    at_least("dataset.pulls", pulls)

    @functools.cache
    def value(state: State, left: int) -> float:
        if left == 0:
            return 0.0
        best = 0.0
        for arm in range(arms):
            if arm > 0 and state[arm] == state[arm - 1]:
                continue  # an identical arm (the state is sorted): the same value
            p, win, loss = _moves(state, arm)
            best = max(best, p * (1 + value(win, left - 1)) + (1 - p) * value(loss, left - 1))
        return best

    return value(((0, 0),) * arms, pulls)


def index_policy_return(
    arms: int, pulls: int, index: Callable[[int, int, int], float], tolerance: float = 1e-9
) -> float:
    """The exact expected return of playing the largest ``index(left, s, f)``, ties (within
    ``tolerance``) broken uniformly at random, as ``argmax_random_ties`` does."""
    at_least("dataset.arms", arms)
    at_least("dataset.pulls", pulls)

    @functools.cache
    def value(state: State, left: int) -> float:
        if left == 0:
            return 0.0
        scores = [index(left, s, f) for s, f in state]
        top = max(scores)
        tied = [a for a in range(arms) if scores[a] >= top - tolerance]
        total = 0.0
        for arm in tied:
            p, win, loss = _moves(state, arm)
            total += p * (1 + value(win, left - 1)) + (1 - p) * value(loss, left - 1)
        return total / len(tied)

    return value(((0, 0),) * arms, pulls)
