"""The one summary every score in metarun reports: a mean and its 95% confidence interval over
episodes (or trials), the normal approximation the few-shot literature uses (1.96 standard
errors). A ground-floor module, so that image evaluation and trial evaluation share it."""

from __future__ import annotations

import math

from torch import Tensor


def mean_and_ci95(scores: Tensor) -> tuple[float, float]:
    scores = scores.double().flatten()
    n = scores.numel()
    if n == 0:
        raise ValueError("no scores to summarise")
    std = scores.std(correction=1).item() if n > 1 else 0.0
    return scores.mean().item(), 1.96 * std / math.sqrt(n)


DIGITS = {"acc": 1, "mse": 3, "return": 2}


def formatted(metric: str | None, value: float) -> str:
    """A score with the digits every result line uses: acc 97.9, mse 0.227, return 6.62."""
    return f"{value:.{DIGITS.get(metric or '', 3)}f}"
