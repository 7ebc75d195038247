"""The interface of a policy that plays whole trials, and the random policy every table starts
with.

A policy is started on a batch of environments with one key per trial (``start``), then asked
for actions and told what happened, step by step. Whatever it draws at step ``t`` comes from
``fold(key, t)``, so a trial's actions depend on its key and its own history only.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from metarun.envs.base import Environment, Step
from metarun.randomness import fold, uniform


class TrialPolicy(Protocol):
    """Plays ``[B]`` trials; ``start`` forgets everything (a new trial, a new task)."""

    def start(self, env: Environment, keys: Tensor) -> None: ...

    def act(self, observation: Tensor) -> Tensor:
        """``[B]`` int64 actions for the current step."""
        ...

    def observe(self, actions: Tensor, step: Step) -> None: ...


def action_count(env: Environment) -> int:
    """How many discrete actions ``env`` has (arms of a bandit, actions of an MDP)."""
    for name in ("arms", "actions"):
        if hasattr(env, name):
            return int(getattr(env, name))
    raise TypeError(f"{type(env).__name__} has no discrete actions")


class RandomPolicy:
    """Uniformly random actions: RL²'s "Random" row, the floor every learner must clear."""

    def start(self, env: Environment, keys: Tensor) -> None:
        self.keys = keys
        self.actions = action_count(env)
        self.t = 0

    def act(self, observation: Tensor) -> Tensor:
        u = uniform(fold(self.keys, self.t), ())
        return (u * self.actions).long().clamp(max=self.actions - 1)

    def observe(self, actions: Tensor, step: Step) -> None:
        self.t += 1


def one_hot_add(counts: Tensor, index: Tensor, amount: Tensor | float = 1.0) -> Tensor:
    """``counts[b, index[b]] += amount[b]`` for every row ``b`` (a new tensor)."""
    update = torch.zeros_like(counts)
    amount = torch.as_tensor(amount, dtype=counts.dtype, device=counts.device)
    update.scatter_(1, index[:, None], amount.expand(index.shape[0])[:, None])
    return counts + update
