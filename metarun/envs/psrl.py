"""Posterior sampling for reinforcement learning (PSRL; Osband, Russo & Van Roy 2013, "(More)
Efficient Reinforcement Learning via Posterior Sampling", NeurIPS), RL²'s strongest tabular
baseline (Duan et al. 2016, Table 2).

At the start of each episode PSRL draws one MDP from its posterior, solves it by finite-horizon
dynamic programming and follows that MDP's optimal policy for the episode. The posterior here is
the family's own prior, updated exactly: each (state, action)'s next-state distribution is
Dirichlet(1 + counts), and each mean reward, Normal(1, 1) a priori with Normal(mean, 1) rewards,
is Normal((1 + sum of rewards) / (1 + n), 1 / (1 + n)) after ``n`` rewards. The prior's
numbers are read off the family (``RandomMDPs.reward_mean``, ``reward_mean_std``), so PSRL is
Bayes-correct on the tasks it is scored on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.envs.base import Environment, Step
from metarun.envs.sampling import argmax_random_ties, dirichlet
from metarun.envs.tabular_mdp import optimal_values
from metarun.randomness import fold, normal, stream


class PSRL:
    def __init__(
        self, reward_mean: float = 1.0, reward_mean_std: float = 1.0, noise_std: float = 1.0
    ) -> None:
        self.prior_mean = reward_mean
        self.prior_precision = 1.0 / reward_mean_std**2
        self.noise_precision = 1.0 / noise_std**2

    def start(self, env: Environment, keys: Tensor) -> None:
        self.keys = keys
        self.horizon = env.horizon
        states, actions = env.states, env.actions
        batch = keys.shape[0]
        options = dict(dtype=torch.float64, device=keys.device)
        self.visits = torch.zeros(batch, states, actions, states, **options)
        self.reward_sums = torch.zeros(batch, states, actions, **options)
        self.reward_counts = torch.zeros(batch, states, actions, **options)
        self.t = 0
        self.q: Tensor | None = None

    def _sample_mdp(self) -> None:
        episode = self.t // self.horizon
        key = fold(stream(self.keys, "psrl"), episode)
        transitions = dirichlet(fold(key, 0), 1.0 + self.visits)
        precision = self.prior_precision + self.noise_precision * self.reward_counts
        mean = (
            self.prior_precision * self.prior_mean + self.noise_precision * self.reward_sums
        ) / precision
        shape = self.reward_sums.shape[1:]
        means = mean + normal(fold(key, 1), shape, torch.float64) / precision.sqrt()
        self.q = optimal_values(means, transitions, self.horizon)

    def act(self, observation: Tensor) -> Tensor:
        if self.t % self.horizon == 0:
            self._sample_mdp()
        assert self.q is not None
        to_go = self.horizon - self.t % self.horizon
        rows = torch.arange(self.keys.shape[0], device=self.keys.device)
        values = self.q[rows, to_go, observation.to(self.keys.device)]
        self.state = observation.to(self.keys.device)
        return argmax_random_ties(values, fold(stream(self.keys, "ties"), self.t))

    def observe(self, actions: Tensor, step: Step) -> None:
        rows = torch.arange(self.keys.shape[0], device=self.keys.device)
        actions = actions.to(self.keys.device)
        reached = step.reached.to(self.keys.device)
        self.visits[rows, self.state, actions, reached] += 1
        self.reward_sums[rows, self.state, actions] += step.reward.to(torch.float64)
        self.reward_counts[rows, self.state, actions] += 1
        self.t += 1
