"""k-armed Bernoulli bandits, the first task family of RL² (Duan et al. 2016, arXiv 1611.02779):
each trial draws arm probabilities ``p_1 .. p_k`` uniformly in [0, 1] and lasts ``pulls``
pulls; a pull of arm ``a`` pays 1 with probability ``p_a``, else 0.

RL² treats each pull as an episode of one step (the agent's input is the previous action, reward
and done flag), so a trial here is ``pulls`` episodes of horizon 1. The reward of pull ``t`` on
arm ``a`` is ``u < p_a`` with ``u`` drawn from ``fold(stream(key, "reward"), t)`` at position
``a``: two policies that pull the same arm at the same step see the same coin (common random
numbers, so their difference has less noise than their returns), and a trial's coins depend on
its key only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.envs.base import PLAN_DTYPE, Step, at_least, draw_keys, split_plan
from metarun.randomness import fold, stream, uniform


class BanditTrials:
    """``[B]`` Bernoulli bandits stepped together; observations are empty (``[B, 0]``)."""

    horizon = 1

    def __init__(self, probs: Tensor, keys: Tensor, pulls: int) -> None:
        self.probs = probs.to(torch.float32)
        self.keys = keys
        self.episodes = pulls
        self.arms = probs.shape[1]
        self._coins = stream(keys, "reward")
        self.t = 0

    def __len__(self) -> int:
        return self.probs.shape[0]

    def _observation(self) -> Tensor:
        return self.probs.new_zeros(len(self), 0)

    def reset(self) -> Tensor:
        self.t = 0
        return self._observation()

    def step(self, actions: Tensor) -> Step:
        if self.t >= self.episodes:
            raise RuntimeError(f"the trials are over ({self.episodes} pulls); call reset()")
        actions = actions.to(self.probs.device, torch.int64)
        u = uniform(fold(self._coins, self.t), (self.arms,))
        chosen = torch.arange(len(self), device=actions.device)
        reward = (u[chosen, actions] < self.probs[chosen, actions]).to(torch.float32)
        self.t += 1
        done = torch.ones(len(self), dtype=torch.bool, device=self.probs.device)
        observation = self._observation()
        return Step(observation, reward, done, observation)

    def expected_reward(self, actions: Tensor) -> Tensor:
        """``[B]``: the chosen arms' probabilities (for pseudo-regret)."""
        return self.probs.gather(1, actions.to(self.probs.device, torch.int64)[:, None])[:, 0]

    def best_expected_reward(self) -> Tensor:
        """``[B]``: the best arm's probability."""
        return self.probs.max(dim=1).values


class BernoulliBandits:
    """The task family: a plan row is ``[key, p_1 .. p_k]``."""

    def __init__(self, arms: int = 5, pulls: int = 10) -> None:
        self.arms = at_least("dataset.arms", arms)
        self.pulls = at_least("dataset.pulls", pulls)

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        probs = torch.rand(count, self.arms, generator=generator, dtype=PLAN_DTYPE)
        return torch.cat([draw_keys(count, generator), probs], dim=1)

    def make(self, plan: Tensor, device: torch.device | str = "cpu") -> BanditTrials:
        keys, probs = split_plan(plan, device)
        if probs.shape[1] != self.arms:
            raise ValueError(f"a plan row of {self.arms} arms has {self.arms + 1} columns")
        return BanditTrials(probs, keys, self.pulls)
