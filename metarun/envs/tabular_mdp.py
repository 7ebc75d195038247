"""Random tabular MDPs, the second task family of RL² (Duan et al. 2016, arXiv 1611.02779).

Each trial draws an MDP with ``states`` states and ``actions`` actions: the mean reward of each
(state, action) from Normal(1, 1), a reward on each step drawn from Normal(mean, 1), and each
(state, action)'s next-state distribution from a flat Dirichlet(1). The trial is ``episodes``
episodes of ``horizon`` steps (the defaults: 10 states, 5 actions, horizon 10, 10 episodes).
These settings are the ones the issue quotes from the paper's tabular experiment;
the paper's text could not be read here (the reference search found no copy of arXiv
1611.02779), so they are unchecked against it. Two details are choices of ours, also unchecked:
every episode starts in state 0 (as does ``relearn``'s ``TabularMdp``, docs.rs relearn 0.3.1
``src/envs/mdps.rs``, an RL² replication), and rewards are undiscounted within a trial.

The observation is the state index (``[B]`` int64); learners embed it (RL² feeds a one-hot).
Step ``t``'s reward noise and next state come from ``fold(stream(key, name), t)``, so a trial's
path is a function of its key and its actions only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.envs.base import PLAN_DTYPE, Step, at_least, draw_keys, split_plan
from metarun.envs.sampling import categorical
from metarun.randomness import fold, normal, stream


def optimal_values(means: Tensor, transitions: Tensor, horizon: int) -> Tensor:
    """Finite-horizon dynamic programming: ``[B, horizon + 1, S, A]`` action values ``Q_h``
    with ``h`` steps to go (``Q_0 = 0``) for mean rewards ``[B, S, A]`` and transitions
    ``[B, S, A, S]``. Acting greedily on ``Q_h`` with ``h`` steps left is optimal."""
    batch, states, actions = means.shape
    q = [means.new_zeros(batch, states, actions)]
    for _ in range(horizon):
        v = q[-1].max(dim=-1).values  # [B, S]
        q.append(means + torch.einsum("bsan,bn->bsa", transitions, v))
    return torch.stack(q, dim=1)


class MDPTrials:
    """``[B]`` tabular MDPs stepped together."""

    start_state = 0

    def __init__(
        self, means: Tensor, transitions: Tensor, keys: Tensor, episodes: int, horizon: int
    ) -> None:
        self.means = means.to(torch.float32)
        self.transitions = transitions.to(torch.float32)
        self.keys = keys
        self.episodes = episodes
        self.horizon = horizon
        self.states, self.actions = means.shape[1], means.shape[2]
        self._noise = stream(keys, "reward")
        self._moves = stream(keys, "transition")
        self.t = 0
        self.state = torch.zeros(len(self), dtype=torch.int64, device=means.device)

    def __len__(self) -> int:
        return self.means.shape[0]

    def reset(self) -> Tensor:
        self.t = 0
        self.state = torch.full_like(self.state, self.start_state)
        return self.state.clone()

    def step(self, actions: Tensor) -> Step:
        if self.t >= self.episodes * self.horizon:
            raise RuntimeError("the trials are over; call reset()")
        actions = actions.to(self.means.device, torch.int64)
        rows = torch.arange(len(self), device=actions.device)
        mean = self.means[rows, self.state, actions]
        reward = mean + normal(fold(self._noise, self.t), ()).to(mean.device)
        moved = categorical(fold(self._moves, self.t), self.transitions[rows, self.state, actions])
        self.t += 1
        ended = self.t % self.horizon == 0
        done = torch.full((len(self),), ended, dtype=torch.bool, device=actions.device)
        self.state = torch.full_like(moved, self.start_state) if ended else moved
        return Step(self.state.clone(), reward, done, moved)

    def optimal_return(self) -> Tensor:
        """``[B]``: the expected return of a policy that knows the MDP (the paper's upper
        bound), ``episodes`` times the optimal value of the start state."""
        q = optimal_values(self.means.double(), self.transitions.double(), self.horizon)
        return self.episodes * q[:, -1, self.start_state].max(dim=-1).values


class RandomMDPs:
    """The task family: a plan row is ``[key, means (S*A), transitions (S*A*S)]``."""

    def __init__(
        self,
        states: int = 10,
        actions: int = 5,
        horizon: int = 10,
        episodes: int = 10,
        reward_mean: float = 1.0,
        reward_mean_std: float = 1.0,
    ) -> None:
        self.states = at_least("dataset.states", states)
        self.actions = at_least("dataset.actions", actions)
        self.horizon = at_least("dataset.horizon", horizon)
        self.episodes = at_least("dataset.episodes", episodes)
        self.reward_mean = float(reward_mean)
        self.reward_mean_std = float(reward_mean_std)

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        s, a = self.states, self.actions
        means = self.reward_mean + self.reward_mean_std * torch.randn(
            count, s * a, generator=generator, dtype=PLAN_DTYPE
        )
        # Dirichlet(1, ..., 1) is a vector of unit exponentials divided by its sum.
        u = torch.rand(count, s * a, s, generator=generator, dtype=PLAN_DTYPE)
        exponentials = -torch.log1p(-u)
        transitions = exponentials / exponentials.sum(dim=-1, keepdim=True)
        return torch.cat([draw_keys(count, generator), means, transitions.flatten(1)], dim=1)

    def make(self, plan: Tensor, device: torch.device | str = "cpu") -> MDPTrials:
        keys, parameters = split_plan(plan, device)
        s, a = self.states, self.actions
        if parameters.shape[1] != s * a * (1 + s):
            raise ValueError(f"a plan row of {s} states and {a} actions has {1 + s * a * (1 + s)}")
        means = parameters[:, : s * a].reshape(-1, s, a)
        transitions = parameters[:, s * a :].reshape(-1, s, a, s)
        return MDPTrials(means, transitions, keys, self.episodes, self.horizon)
