"""PPO's losses on hand examples (``metarun.rl.ppo``)."""

from __future__ import annotations

import math

import torch

from metarun.rl.ppo import clipped_surrogate, explained_variance, normalise, value_loss


def _surrogate(ratio: float, advantage: float, clip: float = 0.2) -> tuple[float, float]:
    """The loss of one sample and its gradient with respect to the new log-probability."""
    log_prob = torch.tensor([math.log(ratio)], requires_grad=True)
    loss = clipped_surrogate(log_prob, torch.zeros(1), torch.tensor([advantage]), clip)
    loss.backward()
    return loss.item(), log_prob.grad.item()


def test_ratio_above_the_clip() -> None:
    # A > 0: the gain stops at 1.2 A and the gradient vanishes (no incentive to go further).
    loss, grad = _surrogate(1.5, 1.0)
    assert math.isclose(loss, -1.2, rel_tol=1e-6) and grad == 0.0
    # A < 0: the pessimistic (unclipped) term wins, -A r = 1.5, and pulls the ratio back.
    loss, grad = _surrogate(1.5, -1.0)
    assert math.isclose(loss, 1.5, rel_tol=1e-6) and math.isclose(grad, 1.5, rel_tol=1e-6)


def test_ratio_below_the_clip() -> None:
    # A > 0: unclipped, -A r = -0.5, with gradient -A r = -0.5 (raise the probability).
    loss, grad = _surrogate(0.5, 1.0)
    assert math.isclose(loss, -0.5, rel_tol=1e-6) and math.isclose(grad, -0.5, rel_tol=1e-6)
    # A < 0: clipped at 0.8, -A * 0.8 = 0.8, and no gradient.
    loss, grad = _surrogate(0.5, -1.0)
    assert math.isclose(loss, 0.8, rel_tol=1e-6) and grad == 0.0


def test_ratio_inside_the_clip_is_the_plain_surrogate() -> None:
    loss, grad = _surrogate(1.1, 2.0)
    assert math.isclose(loss, -2.2, rel_tol=1e-6) and math.isclose(grad, -2.2, rel_tol=1e-6)


def test_the_loss_is_the_mean_over_samples() -> None:
    log_prob = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss = clipped_surrogate(log_prob, torch.zeros(4), advantages, 0.2)
    assert math.isclose(loss.item(), (-1.2 + 1.5 - 0.5 + 0.8) / 4, rel_tol=1e-6)


def test_value_loss_hand_example() -> None:
    values, old = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])
    returns = torch.tensor([3.0, 1.0])
    # unclipped: 0.5 * mean([1, 1]) = 0.5
    assert math.isclose(value_loss(values, old, returns, None).item(), 0.5)
    # clip 0.5: sample 0 moves to 1.5, error (1.5 - 3)^2 = 2.25 > 1; sample 1 stays, 1.
    assert math.isclose(value_loss(values, old, returns, 0.5).item(), 0.5 * (2.25 + 1.0) / 2)


def test_normalise_and_explained_variance() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 10.0])
    z = normalise(x)
    assert abs(z.mean().item()) < 1e-6 and math.isclose(z.std().item(), 1.0, rel_tol=1e-6)
    assert math.isclose(explained_variance(x, x).item(), 1.0)
    assert abs(explained_variance(torch.full_like(x, x.mean().item()), x).item()) < 1e-6
