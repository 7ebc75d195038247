"""RL² (``metarun.algorithms.rl2``): the GRU's inputs, its state across episodes and trials,
rollouts drawn from keys, and a short training run that must beat a random agent.

The test trials are those a run tests on (``eval.seed + 1`` with ``eval.seed = 0``).
"""

from __future__ import annotations

import pytest
import torch

from metarun.algorithms.base import Update
from metarun.algorithms.rl2 import RL2, family_spaces, step_inputs
from metarun.envs import BernoulliBandits, PointGoals, RandomMDPs
from metarun.envs.evaluate import FixedTrials, evaluate_policy, play
from metarun.envs.trials import Trials
from metarun.errors import ConfigError

TEST_SEED = 1


def learner(family: object, seed: int = 0, **settings: object) -> RL2:
    """An RL² learner whose initial weights come from ``seed``, leaving torch's global
    generator as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return RL2.for_family(family, **settings)


def stepping(rl2: RL2, optimizer: torch.optim.Optimizer, max_norm: float = 0.5) -> Update:
    """What the trainer's update does for one process: backward, clip the norm, step."""

    def update(loss: torch.Tensor, logged: dict[str, torch.Tensor]) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        logged["grad_norm"] = torch.nn.utils.clip_grad_norm_(rl2.parameters(), max_norm)
        optimizer.step()

    return update


def trials(family: object, count: int, seed: int) -> Trials:
    return Trials(family, family.draw(count, torch.Generator().manual_seed(seed)))  # type: ignore[attr-defined]


def test_inputs_layout() -> None:
    # Tabular states one-hot (3 states), previous action one-hot (2 actions), reward, done.
    x = step_inputs(
        torch.tensor([2, 0]),
        torch.tensor([1, 0]),
        torch.tensor([0.5, -1.0]),
        torch.tensor([True, False]),
        observation_size=3,
        actions=2,
    )
    expected = torch.tensor(
        [[0.0, 0.0, 1.0, 0.0, 1.0, 0.5, 1.0], [1.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0]]
    )
    torch.testing.assert_close(x, expected)


def test_inputs_at_a_trials_first_step_and_for_bandits() -> None:
    # Bandits observe nothing ([B, 0]); before the first pull there is no previous action.
    first = step_inputs(torch.zeros(2, 0), None, None, None, observation_size=0, actions=5)
    torch.testing.assert_close(first, torch.zeros(2, 7))
    later = step_inputs(
        torch.zeros(1, 0), torch.tensor([3]), torch.tensor([1.0]), torch.tensor([True]), 0, 5
    )
    torch.testing.assert_close(later, torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]]))


def test_sizes_come_from_the_family() -> None:
    assert family_spaces(BernoulliBandits(arms=4)) == (0, 4)
    assert family_spaces(RandomMDPs(states=6, actions=3)) == (6, 3)
    with pytest.raises(ConfigError, match="^algorithm: rl2 acts in task families"):
        RL2.for_family(PointGoals())


@pytest.mark.parametrize(
    ("key", "settings"),
    [
        ("algorithm.hidden_size", {"hidden_size": 0}),
        ("algorithm.gamma", {"gamma": 1.5}),
        ("algorithm.gae_lambda", {"gae_lambda": -0.1}),
        ("algorithm.clip", {"clip": 0.0}),
        ("algorithm.epochs", {"epochs": 0}),
        ("algorithm.minibatches", {"minibatches": 0}),
        ("algorithm.meta_batch_size", {"meta_batch_size": 0}),
    ],
)
def test_bad_settings_name_their_key(key: str, settings: dict) -> None:
    with pytest.raises(ConfigError, match=f"^{key}: "):
        RL2.for_family(BernoulliBandits(), **settings)


def test_the_state_starts_at_zero_and_survives_episode_boundaries() -> None:
    """Play tabular trials of 3 episodes of 2 steps; one forward pass over the recorded inputs
    from the zero state reproduces every recorded value, so the state was carried across both
    episode boundaries (a reset at a boundary would change the values after it)."""
    family = RandomMDPs(states=4, actions=3, horizon=2, episodes=3)
    rl2 = learner(family, hidden_size=16)
    env = family.make(family.draw(5, torch.Generator().manual_seed(0)))
    policy = rl2.policy(record=True)
    policy.start(env, env.keys)
    assert torch.equal(policy.state, torch.zeros(5, 16))
    rollout, _ = rl2.collect(env)
    assert rollout.inputs[:, 2, -1].eq(1.0).all()  # the step after a boundary sees done = 1
    with torch.no_grad():
        _, values, _ = rl2.network(rollout.inputs)
        _, reset_values, _ = rl2.network(rollout.inputs[:, 2:])
    torch.testing.assert_close(values, rollout.values)
    assert not torch.allclose(reset_values, rollout.values[:, 2:])


def test_a_new_trial_does_not_remember_the_last() -> None:
    family = BernoulliBandits(arms=5, pulls=10)
    rl2 = learner(family, hidden_size=16)
    first = family.make(family.draw(6, torch.Generator().manual_seed(1)))
    second = family.make(family.draw(6, torch.Generator().manual_seed(2)))
    policy = rl2.policy(record=True)
    play(policy, first)
    play(policy, second)  # the same policy object, started again
    after, _ = rl2.collect(second)  # a fresh policy
    torch.testing.assert_close(policy.rollout().values, after.values)
    assert torch.equal(policy.rollout().actions, after.actions)


def test_later_steps_depend_on_earlier_rewards_within_a_trial() -> None:
    family = BernoulliBandits(arms=3, pulls=4)
    rl2 = learner(family, hidden_size=16)
    x = torch.zeros(1, 4, 5)
    x[0, 1:, 0] = 1.0  # pulled arm 0 before steps 1..3
    x[0, 1:, 4] = 1.0  # every pull is an episode (done = 1)
    paid = x.clone()
    paid[0, 1, 3] = 1.0  # the first pull paid 1
    with torch.no_grad():
        logits, _, _ = rl2.network(x)
        logits_paid, _, _ = rl2.network(paid)
    torch.testing.assert_close(logits[0, 0], logits_paid[0, 0])
    assert not torch.allclose(logits[0, 3], logits_paid[0, 3])


def test_rollouts_come_from_the_keys_not_the_batch() -> None:
    family = RandomMDPs(states=4, actions=3, horizon=3, episodes=2)
    rl2 = learner(family, hidden_size=16)
    plan = family.draw(12, torch.Generator().manual_seed(3))
    state = torch.get_rng_state()
    whole, returns = rl2.collect(family.make(plan))
    again, _ = rl2.collect(family.make(plan))
    head, head_returns = rl2.collect(family.make(plan[:5]))
    tail, _ = rl2.collect(family.make(plan[5:]))
    assert torch.equal(torch.get_rng_state(), state)  # nothing drew from the global generator
    assert torch.equal(whole.actions, again.actions)
    assert torch.equal(whole.actions, torch.cat([head.actions, tail.actions]))
    torch.testing.assert_close(whole.log_probs, torch.cat([head.log_probs, tail.log_probs]))
    torch.testing.assert_close(returns[:5], head_returns)
    assert whole.actions.unique().numel() == 3  # sampled, not always the same action


def test_train_step_changes_the_policy_and_reports_metrics() -> None:
    family = BernoulliBandits(arms=5, pulls=10)
    rl2 = learner(family, hidden_size=16, epochs=2, minibatches=2)
    optimizer = torch.optim.Adam(rl2.parameters(), lr=1e-2)
    batch = trials(family, 8, 4)
    before = {k: v.clone() for k, v in rl2.state_dict().items()}
    state = torch.get_rng_state()
    metrics = rl2.train_step(batch, stepping(rl2, optimizer))
    assert torch.equal(torch.get_rng_state(), state)
    names = {"loss", "policy_loss", "value_loss", "entropy", "approx_kl", "return", "grad_norm"}
    assert set(metrics) >= names
    assert all(torch.isfinite(v) for v in metrics.values())
    assert any(not torch.equal(before[k], v) for k, v in rl2.state_dict().items())
    with pytest.raises(ConfigError, match="^algorithm.minibatches: "):
        small = learner(family, minibatches=16)
        small.train_step(batch, stepping(small, optimizer))


def test_train_step_on_tabular_mdps() -> None:
    family = RandomMDPs(states=4, actions=3, horizon=3, episodes=2)
    rl2 = learner(family, hidden_size=16, minibatches=2)
    optimizer = torch.optim.Adam(rl2.parameters(), lr=1e-3)
    metrics = rl2.train_step(trials(family, 6, 5), stepping(rl2, optimizer))
    assert all(torch.isfinite(v) for v in metrics.values())


def test_minibatch_order_is_a_fresh_permutation_each_epoch() -> None:
    rl2 = learner(BernoulliBandits(), hidden_size=8)
    keys = torch.arange(20)
    first, second = rl2._order(keys, 0), rl2._order(keys, 1)
    assert torch.equal(first.sort().values, keys) and torch.equal(second.sort().values, keys)
    assert not torch.equal(first, second)
    # A trial's place in the order comes from its key: reversed keys give the reversed order.
    assert torch.equal(keys.flip(0)[rl2._order(keys.flip(0), 0)], keys[first])


def _train_on_bandits(updates: int) -> float:
    """``updates`` PPO updates of 500 ten-pull trials each (a GRU of 64 units; 40 updates take
    about 4 s of one CPU core), then the mean return on 500 fixed test trials."""
    family = BernoulliBandits(arms=5, pulls=10)
    rl2 = learner(family, hidden_size=64)
    optimizer = torch.optim.Adam(rl2.parameters(), lr=3e-3, eps=1e-5)
    generator = torch.Generator().manual_seed(0)
    update = stepping(rl2, optimizer)
    for _ in range(updates):
        rl2.train_step(Trials(family, family.draw(500, generator)), update)
    trials = FixedTrials(family, 500, TEST_SEED)
    return evaluate_policy(rl2.policy, trials).mean_ci95[0]


LEARNED = 5.5
"""Random play earns 5.0 on 10 pulls, Gittins play 6.66; a 500-trial mean has a CI of about
0.17, so clearing 5.5 is learning, not luck (the run reaches about 5.9)."""


def test_a_short_training_run_beats_random_play() -> None:
    mean = _train_on_bandits(updates=40)
    assert mean > LEARNED, f"RL² earned {mean:.2f} after 40 updates"


def test_the_training_check_fails_without_learning() -> None:
    """The same check on the untrained, near-uniform policy (0 updates) must fail."""
    mean = _train_on_bandits(updates=0)
    assert abs(mean - 5.0) < 0.3 and mean < LEARNED, f"the untrained policy earned {mean:.2f}"
