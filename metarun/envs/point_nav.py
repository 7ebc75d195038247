"""2-D point-robot navigation, the MAML paper's first RL task family (Finn, Abbeel & Levine 2017,
ICML, §5.3): a point starts at the origin, each task has a goal drawn uniformly in
[-0.5, 0.5]^2, an action in [-1, 1] per axis moves it by up to 0.1 along that axis, the reward is
minus the distance to the goal after the move, and an episode lasts at most 100 steps.

Read for the facts (authors' code, ``cbfinn/maml_rl``): ``maml_examples/point_env_randgoal.py``
(goals ``uniform(-0.5, 0.5, size=2)``, start ``(0, 0)``, ``state += action``, reward
``-sqrt(dx^2 + dy^2)``, and the episode ends early once ``|dx| < 0.01`` and ``|dy| < 0.01``),
``rllab/envs/normalized_env.py`` (the policy's action in [-1, 1] is mapped linearly onto the
action box [-0.1, 0.1] and clipped to it: ``max_step * clip(action, -1, 1)``) and
``maml_examples/maml_trpo_point.py`` (``max_path_length = 100``). An episode that reaches the
goal early is over: here it stays where it stopped and earns nothing until the horizon, so a
batch keeps one shape; its return equals the shorter path's.

MAML adapts on several trajectories of one task (the code's ``fast_batch_size = 20``), so a
trial holds ``rollouts`` robots that share the task's goal and move independently: observations
are ``[B, rollouts, 2]``, rewards ``[B, rollouts]``, and a trial's episode return is the mean of
its rollouts' returns (``metarun.envs.evaluate.play``).

The dynamics are deterministic: the key is carried for the learners' own draws.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.envs.base import PLAN_DTYPE, Step, at_least, draw_keys, split_plan
from metarun.errors import ConfigError


class PointTrials:
    """``[B]`` trials of ``rollouts`` point robots each; the observation is the position,
    ``[B, rollouts, 2]`` float32."""

    def __init__(
        self,
        goals: Tensor,
        keys: Tensor,
        episodes: int,
        horizon: int,
        max_step: float,
        goal_radius: float,
        rollouts: int = 1,
    ) -> None:
        self.goals = goals.to(torch.float32)
        self.rollouts = rollouts
        self.keys = keys
        self.episodes = episodes
        self.horizon = horizon
        self.max_step = max_step
        self.goal_radius = goal_radius
        self.t = 0
        self._start_episode()

    def __len__(self) -> int:
        return self.goals.shape[0]

    def _start_episode(self) -> None:
        shape = (len(self), self.rollouts)
        self.position = self.goals.new_zeros(*shape, 2)
        self.arrived = torch.zeros(shape, dtype=torch.bool, device=self.goals.device)

    def reset(self) -> Tensor:
        self.t = 0
        self._start_episode()
        return self.position.clone()

    def step(self, actions: Tensor) -> Step:
        if self.t >= self.episodes * self.horizon:
            raise RuntimeError("the trials are over; call reset()")
        move = self.max_step * actions.to(self.goals.device, torch.float32).clamp(-1.0, 1.0)
        moving = ~self.arrived
        self.position = torch.where(moving[..., None], self.position + move, self.position)
        offset = self.position - self.goals[:, None]
        reward = torch.where(moving, -offset.norm(dim=-1), torch.zeros_like(offset[..., 0]))
        self.arrived = self.arrived | (offset.abs() < self.goal_radius).all(dim=-1)
        self.t += 1
        ended = self.t % self.horizon == 0
        done = torch.full((len(self),), ended, dtype=torch.bool, device=self.goals.device)
        reached = self.position.clone()
        if ended:
            self._start_episode()
        return Step(self.position.clone(), reward, done, reached, moving)


class PointGoals:
    """The task family: a plan row is ``[key, goal_x, goal_y]``."""

    def __init__(
        self,
        episodes: int = 1,
        horizon: int = 100,
        goal_range: tuple[float, float] = (-0.5, 0.5),
        max_step: float = 0.1,
        goal_radius: float = 0.01,
        rollouts: int = 1,
    ) -> None:
        self.episodes = at_least("dataset.episodes", episodes)
        self.rollouts = at_least("dataset.rollouts", rollouts)
        self.horizon = at_least("dataset.horizon", horizon)
        low, high = goal_range
        if not low <= high:
            raise ConfigError("dataset.goal_range", f"needs low <= high, got [{low}, {high}]")
        if not max_step > 0:
            raise ConfigError("dataset.max_step", f"must be positive, got {max_step}")
        if not goal_radius >= 0:
            raise ConfigError("dataset.goal_radius", f"must be at least 0, got {goal_radius}")
        self.goal_range = (float(low), float(high))
        self.max_step = float(max_step)
        self.goal_radius = float(goal_radius)

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        low, high = self.goal_range
        u = torch.rand(count, 2, generator=generator, dtype=PLAN_DTYPE)
        return torch.cat([draw_keys(count, generator), low + (high - low) * u], dim=1)

    def make(self, plan: Tensor, device: torch.device | str = "cpu") -> PointTrials:
        keys, goals = split_plan(plan, device)
        if goals.shape[1] != 2:
            raise ValueError(f"a plan row is [key, goal_x, goal_y], got {goals.shape[1] + 1}")
        return PointTrials(
            goals,
            keys,
            self.episodes,
            self.horizon,
            self.max_step,
            self.goal_radius,
            self.rollouts,
        )
