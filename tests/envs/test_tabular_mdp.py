"""Random tabular MDPs: the plan, hand-computed steps, episode boundaries, batching, the DP."""

from __future__ import annotations

import pytest
import torch

from metarun.envs import RandomMDPs
from metarun.envs.tabular_mdp import optimal_values
from metarun.errors import ConfigError
from metarun.randomness import fold, normal, stream


def test_plan_rows_hold_means_and_stochastic_transitions() -> None:
    family = RandomMDPs(states=4, actions=3)
    plan = family.draw(2000, torch.Generator().manual_seed(0))
    assert plan.shape == (2000, 1 + 4 * 3 + 4 * 3 * 4)
    env = family.make(plan)
    assert env.means.shape == (2000, 4, 3) and env.transitions.shape == (2000, 4, 3, 4)
    sums = env.transitions.sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)
    assert abs(env.means.mean().item() - 1.0) < 0.03  # Normal(1, 1)
    assert abs(env.means.std().item() - 1.0) < 0.03
    # Dirichlet(1) over 4 states: each probability has mean 1/4 and variance 3/80.
    assert abs(env.transitions.mean().item() - 0.25) < 0.005
    assert abs(env.transitions.var().item() - 3 / 80) < 0.003


def deterministic_plan(key: int) -> torch.Tensor:
    """2 states, 2 actions: action 0 stays, action 1 moves to the other state."""
    means = torch.tensor([[0.5, -1.0], [2.0, 3.0]], dtype=torch.float64)
    moves = torch.zeros(2, 2, 2, dtype=torch.float64)
    moves[0, 0, 0] = moves[0, 1, 1] = moves[1, 0, 1] = moves[1, 1, 0] = 1.0
    return torch.cat([torch.tensor([float(key)]), means.flatten(), moves.flatten()])[None]


def test_steps_follow_the_hand_computed_path_and_episodes_restart() -> None:
    family = RandomMDPs(states=2, actions=2, horizon=3, episodes=2)
    env = family.make(deterministic_plan(99))
    assert env.reset().tolist() == [0]
    noise = stream(torch.tensor([99]), "reward")
    expected_state, expected_mean = [1, 1, 0, 0, 0, 1], [-1.0, 2.0, 3.0, 0.5, 0.5, -1.0]
    for t, action in enumerate([1, 0, 1, 0, 0, 1]):
        step = env.step(torch.tensor([action]))
        assert step.reached.tolist() == [expected_state[t]]
        reward = expected_mean[t] + normal(fold(noise, t), ()).item()
        assert step.reward.item() == pytest.approx(reward, abs=1e-6)
        assert step.done.item() == (t in (2, 5))
        # At an episode's end the next observation is the start state again.
        assert step.observation.tolist() == [0 if t in (2, 5) else expected_state[t]]
    with pytest.raises(RuntimeError, match="over"):
        env.step(torch.tensor([0]))


def test_batched_trials_equal_one_at_a_time() -> None:
    family = RandomMDPs(episodes=3)
    plan = family.draw(32, torch.Generator().manual_seed(3))
    actions = torch.randint(0, 5, (30, 32), generator=torch.Generator().manual_seed(4))
    env = family.make(plan)
    env.reset()
    steps = [env.step(actions[t]) for t in range(30)]
    rewards = torch.stack([s.reward for s in steps], dim=1)
    states = torch.stack([s.reached for s in steps], dim=1)
    for i in (0, 31):
        alone = family.make(plan[i : i + 1])
        alone.reset()
        own = [alone.step(actions[t, i : i + 1]) for t in range(30)]
        assert torch.equal(torch.cat([s.reward for s in own]), rewards[i])
        assert torch.equal(torch.cat([s.reached for s in own]), states[i])


def test_transitions_follow_their_probabilities() -> None:
    plan = RandomMDPs(states=3, actions=1, horizon=1, episodes=1).draw(
        1, torch.Generator().manual_seed(0)
    )
    plan = plan.repeat(20000, 1)
    plan[:, 0] = torch.arange(20000, dtype=torch.float64)  # 20000 keys, one MDP
    env = RandomMDPs(states=3, actions=1, horizon=1, episodes=1).make(plan)
    env.reset()
    reached = env.step(torch.zeros(20000, dtype=torch.long)).reached
    frequencies = torch.bincount(reached, minlength=3).double() / 20000
    assert torch.allclose(frequencies, env.transitions[0, 0, 0].double(), atol=0.015)


def test_optimal_values_by_hand() -> None:
    means = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)  # one state, two actions
    stay = torch.ones(1, 1, 2, 1, dtype=torch.float64)
    q = optimal_values(means, stay, horizon=3)
    assert q[0, :, 0].tolist() == [[0.0, 0.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    env = RandomMDPs(states=2, actions=2, horizon=3, episodes=2).make(deterministic_plan(1))
    # Three steps from state 0, by hand: move (-1), stay in state 1 (2), move back (3) = 4.0
    # beats staying in 0 (1.5) and every other path; two episodes make 8.0.
    assert env.optimal_return().tolist() == [pytest.approx(8.0)]


@pytest.mark.parametrize("key", ["states", "actions", "horizon", "episodes"])
def test_bad_settings_name_their_key(key: str) -> None:
    with pytest.raises(ConfigError) as error:
        RandomMDPs(**{key: 0})
    assert error.value.key == f"dataset.{key}"
