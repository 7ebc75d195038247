"""Tasks you act in, shaped as the runner's data sets: a sampler of trial plans and the batch it
gathers, so that the trainer, fixed validation and test sets, checkpoints and resume treat a
trial exactly as an image episode (``/work/shared/design.md``, "Tasks you act in").

``TrialSampler`` draws plan rows from the training generator (or once from ``eval.seed`` for the
fixed sets, through ``FixedEpisodes``) and gathers them into ``Trials``; the learner that plays a
batch makes its environments (``Trials.make``) on the device the batch was moved to. Like an
episode batch, ``Trials.with_keys`` gives each training trial the key of its global index in the
run (``metarun.randomness.task_keys``), here by writing it into the plan's key column: every draw
the trial makes (reward coins, transitions, the policy's actions) then depends on the run's seed,
the step and the trial's index only, whichever process plays it and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from metarun.envs.base import PLAN_DTYPE, Environment, TaskFamily


@dataclass(frozen=True)
class Trials:
    """``[B]`` trials of one task family, as plan rows (``[B, 1 + parameters]`` float64)."""

    family: TaskFamily
    plan: Tensor

    def __len__(self) -> int:
        return self.plan.shape[0]

    @property
    def device(self) -> torch.device:
        return self.plan.device

    def with_keys(self, keys: Tensor) -> Trials:
        """The same tasks with trial keys ``keys`` (``[B]`` 32-bit integers, exact in
        float64)."""
        plan = self.plan.clone()
        plan[:, 0] = keys.to(plan.device, PLAN_DTYPE)
        return replace(self, plan=plan)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Trials:
        return replace(self, plan=self.plan.to(device, non_blocking=non_blocking))

    def make(self) -> Environment:
        """The environments that play these trials, on the plan's device."""
        return self.family.make(self.plan, self.plan.device)


class TrialSampler:
    """The ``TaskSampler`` of a task family: every split draws from the same distribution, and
    validation and test differ from training only by the seed of their fixed sets."""

    def __init__(self, family: TaskFamily) -> None:
        self.family = family
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> TrialSampler:
        self.device = torch.device(device)
        return self

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        return self.family.draw(count, generator)

    def gather(self, plan: Tensor) -> Trials:
        return Trials(self.family, plan.to(self.device))


__all__ = ["TrialSampler", "Trials"]
