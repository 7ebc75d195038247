"""The bandit baselines of RL² (Duan et al. 2016, Table 1), batched and keyed.

- ``UCB1`` (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time analysis of the multiarmed bandit
  problem", Machine Learning 47): pull every arm once, then the arm of largest
  ``mean + sqrt(2 ln t / n_arm)`` with ``t`` the pulls so far. That form cannot reach RL²'s
  UCB1 values at 10 pulls (it spends 5 of them trying 5 arms: 5.7 against 6.7), so the table
  uses it with the Beta(1, 1) prior as pseudo-pulls and the bonus scaled by 0.2, the exploration
  rate Audibert & Munos (2011, ICML tutorial "Introduction to Bandits") recommend and the
  default of ``relearn``'s UCB1 (docs.rs relearn 0.3.1, ``src/agents/bandits/ucb.rs``), an RL²
  replication whose author reports 6.6 for it; the paper's own prior and constant are unchecked.
- ``Greedy``: the arm of largest Beta(1, 1) posterior mean (RL²'s "Greedy" row).
- ``Thompson`` sampling (Thompson 1933) with Beta(1, 1) priors: draw each arm's probability from
  its Beta posterior, pull the largest.
- ``Gittins``: the arm of largest Gittins index for its posterior and the pulls left
  (``metarun.envs.gittins``, computed, not looked up).

Ties (all arms at their prior, equal indices) are broken at random from the trial's key, since a
fixed order would make arm 0 special. These live beside the environments rather than under
``metarun/algorithms/`` because they are not meta-learners (nothing is trained, no
``meta_loss``): they are reference players of one task family; the runner will wrap them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.envs.base import Environment, Step
from metarun.envs.gittins import GittinsTable
from metarun.envs.policies import action_count, one_hot_add
from metarun.envs.sampling import argmax_random_ties, beta
from metarun.randomness import fold


class BetaBernoulliCounts:
    """Per-arm successes and failures; what every bandit baseline here keeps."""

    def start(self, env: Environment, keys: Tensor) -> None:
        self.keys = keys
        self.arms = action_count(env)
        self.pulls = env.episodes * env.horizon
        shape = (keys.shape[0], self.arms)
        self.successes = torch.zeros(shape, dtype=torch.float64, device=keys.device)
        self.failures = torch.zeros_like(self.successes)
        self.t = 0

    def observe(self, actions: Tensor, step: Step) -> None:
        reward = step.reward.to(self.successes.device, torch.float64)
        actions = actions.to(self.successes.device)
        self.successes = one_hot_add(self.successes, actions, reward)
        self.failures = one_hot_add(self.failures, actions, 1.0 - reward)
        self.t += 1

    def choose(self, scores: Tensor) -> Tensor:
        return argmax_random_ties(scores, fold(self.keys, self.t))


class UCB1(BetaBernoulliCounts):
    """The arm of largest ``mean + scale * sqrt(2 ln t / n)`` after ``t`` pulls.

    ``prior=None`` is Auer et al.'s UCB1: every arm is pulled once first, ``mean`` is the arm's
    average and ``n`` its pulls. With a Beta ``prior`` the prior counts as pseudo-pulls (``mean``
    the posterior mean ``(s + a) / (n + a + b)``, ``n`` plus ``a + b``), so no arm must be
    tried first: with 5 arms and 10 pulls, pulling all arms once costs half the trial, which caps
    Auer's UCB1 near 6.0 while RL² reports 6.7 (see the README's table)."""

    def __init__(self, scale: float = 1.0, prior: tuple[float, float] | None = None) -> None:
        self.scale = scale
        self.prior = prior

    def act(self, observation: Tensor) -> Tensor:
        a, b = self.prior if self.prior is not None else (0.0, 0.0)
        n = self.successes + self.failures + a + b
        mean = (self.successes + a) / n.clamp(min=1e-12)
        log_t = torch.log(torch.tensor(max(self.t, 1.0), dtype=torch.float64))
        bonus = self.scale * torch.sqrt(2.0 * log_t / n.clamp(min=1e-12))
        scores = torch.where(n == 0, torch.full_like(mean, torch.inf), mean + bonus)
        return self.choose(scores)


class Greedy(UCB1):
    """The arm of largest posterior mean under a Beta prior (RL²'s "Greedy")."""

    def __init__(self, prior: tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__(scale=0.0, prior=prior)


class Thompson(BetaBernoulliCounts):
    def __init__(self, prior: tuple[float, float] = (1.0, 1.0)) -> None:
        self.prior = prior

    def act(self, observation: Tensor) -> Tensor:
        a, b = self.prior
        draws = beta(fold(self.keys, self.t), a + self.successes, b + self.failures)
        return self.choose(draws)


class Gittins(BetaBernoulliCounts):
    """Gittins-index play; the table is computed once per (horizon, discount, grid)."""

    def __init__(self, discount: float = 1.0, grid: int = 257) -> None:
        self.discount = discount
        self.grid = grid
        self._table: GittinsTable | None = None

    def start(self, env: Environment, keys: Tensor) -> None:
        super().start(env, keys)
        if self._table is None or self._table.horizon != self.pulls:
            self._table = GittinsTable(self.pulls, self.discount, self.grid)

    def act(self, observation: Tensor) -> Tensor:
        assert self._table is not None
        left = self.pulls - self.t
        scores = self._table(left, self.successes, self.failures)
        return self.choose(scores)
