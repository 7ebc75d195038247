"""MAML-RL's advantages: discounted returns against a loop, rllab's linear baseline against a
least-squares solve of the same ridge problem, and the per-task centring."""

from __future__ import annotations

import pytest
import torch

from metarun.rl.reinforce import (
    BASELINE_RIDGE,
    baseline_features,
    centred_advantages,
    discounted_returns,
    linear_baseline,
)


def test_discounted_returns_equal_the_backward_recursion() -> None:
    rewards = torch.randn(3, 4, 7, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros_like(rewards)
    following = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(7)):
        following = rewards[..., t] + 0.9 * following
        expected[..., t] = following
    assert torch.allclose(discounted_returns(rewards, 0.9), expected, atol=1e-6)


def test_the_features_are_rllabs() -> None:
    obs = torch.tensor([[[0.5, -20.0], [1.0, 2.0]]])  # one rollout, two steps
    features = baseline_features(obs)[0]
    assert features[0].tolist() == pytest.approx([0.5, -10.0, 0.25, 100.0, 0.0, 0.0, 0.0, 1.0])
    assert features[1].tolist() == pytest.approx([1.0, 2.0, 1.0, 4.0, 0.01, 1e-4, 1e-6, 1.0])


def test_the_baseline_is_each_tasks_own_ridge_fit_on_its_valid_steps() -> None:
    generator = torch.Generator().manual_seed(1)
    obs = torch.randn(2, 3, 6, 2, generator=generator)
    returns = torch.randn(2, 3, 6, generator=generator)
    valid = torch.ones(2, 3, 6)
    valid[1, 2, 4:] = 0  # a path that ended early
    fitted = linear_baseline(obs, returns, valid)
    for task in range(2):
        keep = valid[task].flatten().bool()
        features = baseline_features(obs[task].double()).flatten(0, 1)[keep]
        targets = returns[task].double().flatten()[keep]
        ridge = (BASELINE_RIDGE**0.5) * torch.eye(features.shape[1], dtype=torch.float64)
        a = torch.cat([features, ridge])
        b = torch.cat([targets, torch.zeros(features.shape[1], dtype=torch.float64)])
        weights = torch.linalg.lstsq(a, b[:, None]).solution
        expected = (baseline_features(obs[task].double()) @ weights).squeeze(-1)
        assert torch.allclose(fitted[task].double(), expected, atol=1e-4)


def test_advantages_are_centred_per_task_over_the_valid_steps() -> None:
    generator = torch.Generator().manual_seed(2)
    obs = torch.randn(2, 4, 5, 2, generator=generator)
    rewards = torch.randn(2, 4, 5, generator=generator)
    valid = torch.ones(2, 4, 5)
    valid[0, 1, 3:] = 0
    advantages = centred_advantages(obs, rewards, valid, 0.99)
    assert (advantages[0, 1, 3:] == 0).all()
    for task in range(2):
        kept = advantages[task][valid[task].bool()]
        assert kept.mean().abs() < 1e-5
        assert kept.std(unbiased=False) == pytest.approx(1.0, abs=1e-4)
