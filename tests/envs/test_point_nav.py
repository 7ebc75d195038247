"""2-D navigation: goals, clipped moves, rewards, arrival and episode restarts by hand."""

from __future__ import annotations

import pytest
import torch

from metarun.envs import PointGoals
from metarun.errors import ConfigError


def plan_of(goals: list[list[float]]) -> torch.Tensor:
    goals_t = torch.tensor(goals, dtype=torch.float64)
    return torch.cat([torch.arange(len(goals), dtype=torch.float64)[:, None], goals_t], dim=1)


def test_goals_are_uniform_in_the_square() -> None:
    plan = PointGoals().draw(4000, torch.Generator().manual_seed(0))
    goals = plan[:, 1:]
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.mean(0).abs().max() < 0.02
    assert abs(goals.var(0).mean().item() - 1 / 12) < 0.005


def test_moves_are_clipped_and_rewarded_by_distance() -> None:
    env = PointGoals(horizon=3, episodes=2).make(plan_of([[0.3, -0.2]]))
    assert env.reset().tolist() == [[[0.0, 0.0]]]
    step = env.step(torch.tensor([[[3.0, -0.5]]]))  # x clipped to 1: a move of 0.1
    assert step.observation[0, 0].tolist() == pytest.approx([0.1, -0.05])
    assert step.reward.item() == pytest.approx(-((0.2**2 + 0.15**2) ** 0.5))
    env.step(torch.tensor([[[0.0, 0.0]]]))
    last = env.step(torch.tensor([[[1.0, 0.0]]]))
    assert bool(last.done.item())
    assert last.reached[0, 0].tolist() == pytest.approx([0.2, -0.05])
    assert last.observation.tolist() == [[[0.0, 0.0]]]  # the next episode starts at the origin


def test_rollouts_share_the_goal_and_move_apart() -> None:
    env = PointGoals(horizon=2, rollouts=3).make(plan_of([[0.3, 0.0], [0.0, 0.3]]))
    assert env.reset().shape == (2, 3, 2)
    moves = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]).expand(2, 3, 2)
    reward = env.step(moves).reward
    assert reward.shape == (2, 3)
    # trial 0 (goal (0.3, 0)): rollout 0 moved to (0.1, 0), 1 to (0, 0.1), 2 to (-0.1, 0)
    assert reward[0].tolist() == pytest.approx([-0.2, -((0.1**2 + 0.3**2) ** 0.5), -0.4])
    assert reward[1].tolist() == pytest.approx(
        [-((0.1**2 + 0.3**2) ** 0.5), -0.2, -((0.1**2 + 0.3**2) ** 0.5)]
    )


def test_arrival_ends_the_episode_early() -> None:
    env = PointGoals(horizon=4).make(plan_of([[0.1, 0.005]]))
    env.reset()
    rewards = [env.step(torch.tensor([[[1.0, 0.0]]])).reward.item() for _ in range(4)]
    assert rewards[0] == pytest.approx(-0.005)  # within 0.01 on both axes: arrived
    assert rewards[1:] == [0.0, 0.0, 0.0]  # and it stays put, earning nothing


def test_batched_equals_one_at_a_time() -> None:
    family = PointGoals(horizon=10, episodes=2)
    plan = family.draw(16, torch.Generator().manual_seed(1))
    actions = torch.randn(20, 16, 1, 2, generator=torch.Generator().manual_seed(2))
    env = family.make(plan)
    env.reset()
    together = torch.stack([env.step(actions[t]).reward for t in range(20)], dim=1)
    alone = family.make(plan[5:6])
    alone.reset()
    assert torch.equal(
        torch.cat([alone.step(actions[t, 5:6]).reward for t in range(20)]), together[5]
    )


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"horizon": 0}, "dataset.horizon"),
        ({"episodes": 0}, "dataset.episodes"),
        ({"goal_range": (0.5, -0.5)}, "dataset.goal_range"),
        ({"max_step": 0.0}, "dataset.max_step"),
        ({"rollouts": 0}, "dataset.rollouts"),
    ],
)
def test_bad_settings_name_their_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        PointGoals(**settings)
    assert error.value.key == key
