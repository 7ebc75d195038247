"""Sinusoid regression, the toy task family of MAML (Finn, Abbeel & Levine 2017, ICML, §5.1).

Each task is ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5]``, phase ``phi ~ U[0, pi]``
and inputs ``x ~ U[-5, 5]``; a learner sees K (x, y) pairs and is scored by mean squared error
on fresh points of the same task. Tasks are drawn, never stored, so there is no data to find.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError

Range = tuple[float, float]


def scaled(u: Tensor, bounds: Range) -> Tensor:
    """Uniform ``[0, 1)`` draws mapped onto ``[low, high)``."""
    return bounds[0] + u * (bounds[1] - bounds[0])


def check_ranges(ranges: dict[str, Range]) -> None:
    """Each ``dataset.<key>`` a ``[low, high]`` pair with ``low <= high``."""
    for key, (low, high) in ranges.items():
        if not low <= high:
            raise ConfigError(f"dataset.{key}", f"needs low <= high, got [{low}, {high}]")


def regression_batch(x: Tensor, y: Tensor, shots: int) -> EpisodeBatch:
    """``[B, K+Q]`` inputs and targets as episodes of ``[B, n, 1]`` tensors, the first K the
    support set."""
    return EpisodeBatch(
        support_x=x[:, :shots, None],
        support_y=y[:, :shots, None],
        query_x=x[:, shots:, None],
        query_y=y[:, shots:, None],
        ways=1,
    )


class SinusoidTasks:
    """Draws sinusoid tasks; a plan row is ``[amplitude, phase, x_1 .. x_{K+Q}]``."""

    def __init__(
        self,
        spec: EpisodeSpec,
        amplitude: tuple[float, float],
        phase: tuple[float, float],
        x_range: tuple[float, float],
    ) -> None:
        self.spec = spec
        self.amplitude = amplitude
        self.phase = phase
        self.x_range = x_range
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> SinusoidTasks:
        self.device = torch.device(device)
        return self

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        points = self.spec.shots + self.spec.queries
        u = torch.rand(count, 2 + points, generator=generator)
        plan = torch.empty_like(u)
        plan[:, 0] = scaled(u[:, 0], self.amplitude)
        plan[:, 1] = scaled(u[:, 1], self.phase)
        plan[:, 2:] = scaled(u[:, 2:], self.x_range)
        return plan

    def gather(self, plan: Tensor) -> EpisodeBatch:
        plan = plan.to(self.device)
        amplitude, phase, x = plan[:, :1], plan[:, 1:2], plan[:, 2:]
        return regression_batch(x, amplitude * torch.sin(x - phase), self.spec.shots)


class Sinusoid:
    """The sinusoid task family; every split draws from the same distribution, and
    validation and test differ only by the seed of their fixed task sets."""

    def __init__(
        self,
        shots: int = 10,
        queries: int = 10,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        check_ranges({"amplitude": amplitude, "phase": phase, "x_range": x_range})
        self.ranges = (tuple(amplitude), tuple(phase), tuple(x_range))
        self.episodes = EpisodeSpec(ways=1, shots=shots, queries=queries)
        self.task = TaskSpec("regression", (1,), 1)

    def sampler(
        self,
        split: str,
        spec: EpisodeSpec,
        keys: tuple[str, str, str] = ("dataset.ways", "dataset.shots", "dataset.queries"),
    ) -> SinusoidTasks:
        for key, value in zip(keys[1:], (spec.shots, spec.queries), strict=True):
            if value < 1:
                raise ConfigError(key, f"must be at least 1, got {value}")
        return self.tasks(spec)

    def tasks(self, spec: EpisodeSpec) -> SinusoidTasks:
        """The sampler of this family's tasks (a task family of the same shape overrides it)."""
        return SinusoidTasks(spec, *self.ranges)

    def preprocess(self, x: float | Tensor) -> Tensor:
        """An input point as the ``[1]`` tensor the model expects."""
        return torch.as_tensor(x, dtype=torch.float32).reshape(1)
