"""GAE over whole trials against hand values and its closed form (``metarun.rl.gae``)."""

from __future__ import annotations

import pytest
import torch

from metarun.rl.gae import trial_advantages


def test_hand_values() -> None:
    # gamma 0.9, lambda 0.5, V_3 = 0 after the trial:
    # delta = [1 + 0.9*1 - 0.5, 0 + 0.9*(-0.5) - 1, 2 - (-0.5)] = [1.4, -1.45, 2.5]
    # A_2 = 2.5, A_1 = -1.45 + 0.45*2.5 = -0.325, A_0 = 1.4 + 0.45*(-0.325) = 1.25375
    rewards = torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 1.0, -0.5]], dtype=torch.float64)
    advantages = trial_advantages(rewards, values, gamma=0.9, lam=0.5)
    expected = torch.tensor([[1.25375, -0.325, 2.5]], dtype=torch.float64)
    torch.testing.assert_close(advantages, expected)


@pytest.mark.parametrize(("gamma", "lam"), [(0.99, 0.3), (0.9, 1.0), (1.0, 0.0), (0.5, 0.7)])
def test_closed_form(gamma: float, lam: float) -> None:
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 7, generator=generator, dtype=torch.float64)
    values = torch.randn(3, 7, generator=generator, dtype=torch.float64)
    following = torch.cat([values[:, 1:], torch.zeros(3, 1, dtype=torch.float64)], dim=1)
    delta = rewards + gamma * following - values
    expected = torch.zeros_like(rewards)
    for t in range(7):
        for later in range(t, 7):
            expected[:, t] += (gamma * lam) ** (later - t) * delta[:, later]
    torch.testing.assert_close(trial_advantages(rewards, values, gamma, lam), expected)


def test_lambda_one_gives_the_discounted_return_of_the_whole_trial() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    values = torch.tensor([[0.3, -0.2, 0.7, 0.1]], dtype=torch.float64)
    returns = trial_advantages(rewards, values, gamma=0.5, lam=1.0) + values
    expected = torch.tensor([[1 + 1 + 0.75 + 0.5, 2 + 1.5 + 1, 3 + 2, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(returns, expected)


def test_an_episode_boundary_inside_the_trial_does_not_cut_the_advantage() -> None:
    """Bandit trials end an episode at every pull; the first pull's advantage must still feel
    the last pull's reward, by (gamma * lambda)^3, as if no episode had ended."""
    values = torch.zeros(1, 4, dtype=torch.float64)
    low = torch.tensor([[0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    high = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    gamma, lam = 0.9, 0.5
    change = trial_advantages(high, values, gamma, lam) - trial_advantages(low, values, gamma, lam)
    expected = torch.tensor([[(gamma * lam) ** 3, (gamma * lam) ** 2, gamma * lam, 1.0]])
    torch.testing.assert_close(change, expected.double())


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="rewards and values"):
        trial_advantages(torch.zeros(2, 3), torch.zeros(2, 4), 0.9, 0.5)
