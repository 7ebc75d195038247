"""Keyed Gamma, Beta, Dirichlet and categorical draws: their moments, and each element a
function of its key alone."""

from __future__ import annotations

import pytest
import torch

from metarun.envs.sampling import argmax_random_ties, beta, categorical, dirichlet, gamma
from metarun.randomness import as_key, fold

KEYS = fold(as_key(11), torch.arange(20000))


@pytest.mark.parametrize("shape", [0.5, 1.0, 2.5, 7.0])
def test_gamma_has_its_mean_and_variance(shape: float) -> None:
    draws = gamma(KEYS, torch.full((20000,), shape))
    assert draws.min() > 0
    # mean and variance are both ``shape``; 20000 draws put the mean within ~4 standard errors.
    assert abs(draws.mean().item() - shape) < 4 * (shape / 20000) ** 0.5
    assert abs(draws.var().item() / shape - 1) < 0.06


def test_each_draw_depends_on_its_key_only() -> None:
    shapes = torch.tensor([[1.0, 2.0, 3.5], [0.7, 1.0, 9.0]]).repeat(50, 1)
    keys = KEYS[:100]
    together = gamma(keys, shapes)
    assert torch.equal(gamma(keys[7:9], shapes[7:9]), together[7:9])
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gamma(keys[order], shapes[order]), together[order])
    assert not torch.equal(together[0], together[2])  # same shapes, other keys


def test_beta_and_dirichlet_moments() -> None:
    b = beta(KEYS, torch.full((20000,), 2.0), torch.full((20000,), 5.0))
    assert abs(b.mean().item() - 2 / 7) < 0.005
    assert abs(b.var().item() - (2 * 5) / (49 * 8)) < 0.002
    d = dirichlet(KEYS, torch.tensor([1.0, 2.0, 3.0]).expand(20000, 3))
    assert torch.allclose(d.sum(-1), torch.ones(20000, dtype=torch.float64))
    assert torch.allclose(
        d.mean(0), torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=torch.float64), atol=0.006
    )


def test_categorical_frequencies() -> None:
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3]).expand(20000, 4)
    picks = categorical(KEYS, probs)
    frequencies = torch.bincount(picks, minlength=4).double() / 20000
    assert frequencies[1] == 0
    assert torch.allclose(frequencies, probs[0].double(), atol=0.012)


def test_argmax_breaks_only_ties_and_at_random() -> None:
    values = torch.tensor([0.2, 0.9, 0.9, 0.1, 0.9]).expand(20000, 5)
    picks = argmax_random_ties(values, KEYS)
    counts = torch.bincount(picks, minlength=5)
    assert counts[0] == counts[3] == 0
    assert (counts[[1, 2, 4]].double() / 20000 - 1 / 3).abs().max() < 0.015
