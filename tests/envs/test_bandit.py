"""Bernoulli bandits: the plan, hand-computed coins, batching, and bad settings."""

from __future__ import annotations

import pytest
import torch

from metarun.envs import BernoulliBandits
from metarun.errors import ConfigError
from metarun.randomness import fold, stream, uniform


def plan_of(probs: list[list[float]], keys: list[int]) -> torch.Tensor:
    return torch.cat(
        [
            torch.tensor(keys, dtype=torch.float64)[:, None],
            torch.tensor(probs, dtype=torch.float64),
        ],
        dim=1,
    )


def test_plan_is_seeded_keys_then_probabilities() -> None:
    family = BernoulliBandits(arms=4, pulls=3)
    plan = family.draw(500, torch.Generator().manual_seed(7))
    again = family.draw(500, torch.Generator().manual_seed(7))
    assert plan.shape == (500, 5) and plan.dtype == torch.float64
    assert torch.equal(plan, again)
    keys, probs = plan[:, 0], plan[:, 1:]
    assert torch.equal(keys, keys.round()) and keys.min() >= 0 and keys.max() < 2**32
    assert probs.min() >= 0 and probs.max() <= 1
    assert abs(probs.mean().item() - 0.5) < 0.03  # uniform in [0, 1]


def test_rewards_are_the_hand_computed_coins() -> None:
    env = BernoulliBandits(arms=3, pulls=4).make(plan_of([[0.0, 1.0, 0.5]], [12345]))
    env.reset()
    coins = stream(torch.tensor([12345]), "reward")
    for t, arm in enumerate([0, 1, 2, 2]):
        step = env.step(torch.tensor([arm]))
        u = uniform(fold(coins, t), (3,))[0, arm]
        assert step.reward.item() == float(u < [0.0, 1.0, 0.5][arm])
        assert bool(step.done.item())  # every pull is an episode of one step
        assert step.observation.shape == (1, 0)
    with pytest.raises(RuntimeError, match="over"):
        env.step(torch.tensor([0]))


def test_batched_trials_equal_one_at_a_time_and_any_order() -> None:
    family = BernoulliBandits(arms=5, pulls=20)
    plan = family.draw(64, torch.Generator().manual_seed(0))
    actions = torch.randint(0, 5, (20, 64), generator=torch.Generator().manual_seed(1))
    env = family.make(plan)
    env.reset()
    together = torch.stack([env.step(actions[t]).reward for t in range(20)], dim=1)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(2))
    shuffled = family.make(plan[order])
    shuffled.reset()
    mixed = torch.stack([shuffled.step(actions[t, order]).reward for t in range(20)], dim=1)
    assert torch.equal(mixed, together[order])
    for i in (0, 17, 63):
        alone = family.make(plan[i : i + 1])
        alone.reset()
        rewards = torch.cat([alone.step(actions[t, i : i + 1]).reward for t in range(20)])
        assert torch.equal(rewards, together[i])


def test_pseudo_regret_helpers() -> None:
    env = BernoulliBandits(arms=3, pulls=1).make(plan_of([[0.2, 0.9, 0.4]], [1]))
    assert env.best_expected_reward().item() == pytest.approx(0.9)
    assert env.expected_reward(torch.tensor([2])).item() == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"arms": 0}, "dataset.arms"),
        ({"pulls": 0}, "dataset.pulls"),
        ({"arms": 2.5}, "dataset.arms"),
    ],
)
def test_bad_settings_name_their_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        BernoulliBandits(**settings)
    assert error.value.key == key
    assert str(error.value).startswith(f"{key}: must be an integer of at least 1")
