"""What every batched task family shares: the plan's layout, the step record, setting checks.

A task family is a data set of tasks you act in (``/work/shared/design.md``, "Tasks you act
in"): ``draw(count, generator)`` returns a CPU plan, one row per trial, and ``make(plan,
device)`` builds the batched environment that plays those trials. A plan row is float64 and
starts with the trial's random key (a 32-bit integer, exact in float64), then the task's
parameters. The key travels with the task so that every draw the trial makes (a Bernoulli
reward, a transition) is a function of the key, the step and the arm or state, never of which
trials share the batch or which device steps it (``metarun.randomness``).

A trial is ``episodes`` episodes of ``horizon`` steps each in one sampled task; when an episode
ends the environment starts the next one by itself (as in RL²'s formulation, the agent's memory
runs through the trial and the task's state does not), so a driver steps exactly ``episodes *
horizon`` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from metarun.errors import ConfigError
from metarun.randomness import MASK32

PLAN_DTYPE = torch.float64


@dataclass
class Step:
    """What one step of ``[B]`` environments returns."""

    observation: Tensor
    """``[B, ...]``: the next observation (the first one of the next episode after a boundary)."""
    reward: Tensor
    """``[B]`` float32, or ``[B, rollouts]`` for a family whose trial runs several rollouts of
    its task side by side (``metarun.envs.point_nav``)."""
    done: Tensor
    """``[B]`` bool: this step ended an episode."""
    reached: Tensor
    """``[B, ...]``: the observation the step led to before an episode's automatic restart
    (``observation`` itself except where ``done``), for learners that count transitions."""
    active: Tensor | None = None
    """``reward``'s shape, bool: which rollouts were still running when the step was taken
    (False once a point robot has arrived: its path is over; None: all of them)."""


class Environment(Protocol):
    """``[B]`` environments, one trial each, stepped together."""

    episodes: int
    horizon: int
    keys: Tensor

    def reset(self) -> Tensor:
        """Start the trials over (first episode, first step); the first observations."""
        ...

    def step(self, actions: Tensor) -> Step: ...


class TaskFamily(Protocol):
    """A distribution of tasks with the data-set shape: a seeded plan, then a batch."""

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        """``[count, 1 + parameters]`` float64 on the CPU: a key, then the task's parameters."""
        ...

    def make(self, plan: Tensor, device: torch.device | str = "cpu") -> Environment: ...


def draw_keys(count: int, generator: torch.Generator) -> Tensor:
    """``[count, 1]`` float64: one 32-bit trial key per row, from the plan's generator."""
    return torch.randint(0, MASK32 + 1, (count, 1), generator=generator).to(PLAN_DTYPE)


def split_plan(plan: Tensor, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """A plan's keys (``[B]`` int64) and parameters (``[B, P]`` float64) on ``device``."""
    if plan.dim() != 2 or plan.shape[1] < 1:
        raise ValueError(f"a plan is [trials, 1 + parameters], got {tuple(plan.shape)}")
    plan = plan.to(device)
    return plan[:, 0].to(torch.int64), plan[:, 1:]


def at_least(key: str, value: int, low: int = 1) -> int:
    """``value`` as an int, or a ``ConfigError`` naming ``key``."""
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ConfigError(key, f"must be an integer of at least {low}, got {value!r}")
    return int(value)
