"""Sinusoids or lines, with noise: the ambiguous regression of PLATIPUS (Finn, Xu & Levine 2018,
NeurIPS, "Probabilistic Model-Agnostic Meta-Learning", arXiv 1806.02817, section 5).

Each task is, with equal probability, a sinusoid ``y = A sin(x - phi)`` or a line
``y = a x + b``, observed with Gaussian noise; from a few points (5 in the paper) it is often
unclear which, and a learner that samples functions should show both. The values here:

* sinusoid: amplitude ``A ~ U[0.1, 5]``, phase ``phi ~ U[0, pi]`` (MAML's sinusoid, which the
  paper says it extends); line: slope and intercept ``~ U[-3, 3]``; ``x ~ U[-5, 5]``; noise std
  0.3; 5 support points. Checked against the port ``cnguyen10/few_shot_meta_learning``
  (``EpisodeGenerator.py``, ``SineLineGenerator``: slope, intercept, x range, phase, noise std
  0.3, a fair coin between the kinds), which draws amplitudes from ``U[0.5, 5]`` and writes
  ``sin(x + phase)``; the paper's appendix could not be read here, so its exact ranges and
  noise are unchecked, and MAML's amplitude range and sign of the phase are kept.

A plan row is ``[kind, a, b, x_1 .. x_n, e_1 .. e_n]``: ``kind`` 0 for a sinusoid (``a`` the
amplitude, ``b`` the phase) or 1 for a line (slope, intercept), the ``n = K + Q`` inputs and
their standard normal noise draws, so the true function of every task can be drawn from its
plan (``true_values``), and ``gather`` is a pure function of the plan.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.sinusoid import (
    Range,
    Sinusoid,
    SinusoidTasks,
    check_ranges,
    regression_batch,
    scaled,
)
from metarun.errors import ConfigError

SINUSOID, LINE = 0, 1


def true_values(plan: Tensor, x: Tensor) -> Tensor:
    """The noise-free ``y`` of each plan row's function at ``x`` (``[B, m]``, or ``[m]`` for
    the same inputs in every row)."""
    kind, a, b = plan[:, :1], plan[:, 1:2], plan[:, 2:3]
    x = x.to(plan).expand(len(plan), -1) if x.dim() == 1 else x
    return torch.where(kind == LINE, a * x + b, a * torch.sin(x - b))


class SinelineTasks(SinusoidTasks):
    """Draws sinusoid-or-line tasks (plan rows as in the module docstring)."""

    def __init__(
        self,
        spec: EpisodeSpec,
        ranges: dict[str, Range],
        noise_std: float,
        line_probability: float,
    ) -> None:
        super().__init__(spec, ranges["amplitude"], ranges["phase"], ranges["x_range"])
        self.ranges = ranges
        self.noise_std = noise_std
        self.line_probability = line_probability

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        points = self.spec.shots + self.spec.queries
        u = torch.rand(count, 3 + points, generator=generator)
        noise = torch.randn(count, points, generator=generator)
        line = u[:, 0] < self.line_probability
        r = self.ranges
        a = torch.where(line, scaled(u[:, 1], r["slope"]), scaled(u[:, 1], r["amplitude"]))
        b = torch.where(line, scaled(u[:, 2], r["intercept"]), scaled(u[:, 2], r["phase"]))
        x = scaled(u[:, 3:], self.ranges["x_range"])
        return torch.cat([line.float()[:, None], a[:, None], b[:, None], x, noise], dim=1)

    def gather(self, plan: Tensor) -> EpisodeBatch:
        plan = plan.to(self.device)
        points = self.spec.shots + self.spec.queries
        x, noise = plan[:, 3 : 3 + points], plan[:, 3 + points :]
        y = true_values(plan, x) + self.noise_std * noise
        return regression_batch(x, y, self.spec.shots)


class Sineline(Sinusoid):
    """The sinusoid-or-line task family; every split draws from the same distribution."""

    def __init__(
        self,
        shots: int = 5,
        queries: int = 10,
        amplitude: Range = (0.1, 5.0),
        phase: Range = (0.0, math.pi),
        slope: Range = (-3.0, 3.0),
        intercept: Range = (-3.0, 3.0),
        x_range: Range = (-5.0, 5.0),
        noise_std: float = 0.3,
        line_probability: float = 0.5,
    ) -> None:
        super().__init__(shots, queries, amplitude, phase, x_range)
        check_ranges({"slope": slope, "intercept": intercept})
        if not noise_std >= 0:
            raise ConfigError("dataset.noise_std", f"must be >= 0, got {noise_std}")
        if not 0 <= line_probability <= 1:
            raise ConfigError(
                "dataset.line_probability", f"must be in [0, 1], got {line_probability}"
            )
        named = zip(("amplitude", "phase", "x_range"), self.ranges, strict=True)
        self.sineline_ranges = {
            **dict(named),
            "slope": tuple(slope),
            "intercept": tuple(intercept),
        }
        self.noise_std = float(noise_std)
        self.line_probability = float(line_probability)

    def tasks(self, spec: EpisodeSpec) -> SinelineTasks:
        return SinelineTasks(spec, self.sineline_ranges, self.noise_std, self.line_probability)


__all__ = ["LINE", "SINUSOID", "Sineline", "SinelineTasks", "true_values"]
