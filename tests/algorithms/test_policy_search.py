"""MAML-RL on the gradient family's core: the control loss is REINFORCE's surrogate, a batch of
tasks adapts as each task alone with plain autograd, evaluation adapts at episode boundaries,
and a short meta-training run improves the adapted policy's return."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from metarun.algorithms import MAML, MAMLPlusPlus
from metarun.data.task import TaskSpec
from metarun.envs.data_sets import Bandits, PointNavigation
from metarun.envs.evaluate import FixedTrials, evaluate_policy
from metarun.envs.trials import Trials
from metarun.errors import ConfigError
from metarun.models import MLP
from metarun.models.gaussian_policy import GaussianHead
from metarun.randomness import stream, task_keys

SMALL_MLP = functools.partial(MLP, hidden=[16], init="glorot")


def small_maml(data: PointNavigation, **settings) -> MAML:
    torch.manual_seed(0)
    return MAML(SMALL_MLP, data.task, **{"inner_lr": 0.5, "meta_batch_size": 3, **settings})


def some_trials(data: PointNavigation, count: int, seed: int = 0) -> Trials:
    plan = data.family.draw(count, torch.Generator().manual_seed(seed))
    return Trials(data.family, plan).with_keys(task_keys(seed, 1, count))


def test_the_control_loss_is_reinforces_surrogate_in_closed_form() -> None:
    head = GaussianHead(3, 2)
    assert head.log_std.tolist() == [0.0, 0.0] and (head.bias == 0).all()  # std 1, Glorot
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(5, 3, generator=generator)
    actions = torch.randn(5, 2, generator=generator)
    weights = torch.randn(5, generator=generator)
    task = TaskSpec("control", (3,), 2, continuous_actions=True)
    loss = task.loss(head(features), torch.cat([actions, weights[:, None]], dim=1))
    grad_bias, grad_log_std = torch.autograd.grad(loss, [head.bias, head.log_std])
    with torch.no_grad():
        mean, std = features @ head.weight.T + head.bias, head.log_std.exp()
        z = (actions - mean) / std
        log_prob = (-0.5 * z**2 - head.log_std - 0.5 * math.log(2 * math.pi)).sum(1)
        assert loss.item() == pytest.approx(-(log_prob * weights).mean().item(), rel=1e-6)
        # d/d mean log N = (a - mean) / std^2; d/d log_std log N = z^2 - 1
        expected_bias = -(weights[:, None] * (actions - mean) / std**2).mean(0)
        expected_log_std = -(weights[:, None] * (z**2 - 1)).mean(0)
    assert torch.allclose(grad_bias, expected_bias, atol=1e-6)
    assert torch.allclose(grad_log_std, expected_log_std, atol=1e-6)


def test_a_batch_of_tasks_adapts_as_each_task_alone_by_plain_autograd() -> None:
    data = PointNavigation(rollouts=4, horizon=10)
    learner = small_maml(data)
    trials = some_trials(data, 3)
    env = trials.make()
    rollouts = learner.roll_out(env, None, stream(env.keys, "episode 0"))
    adapted = learner.policy_step(None, rollouts, True, None)
    x, y = rollouts.examples(learner.discount)
    names = list(learner.inner_parameters())
    for task in range(3):
        loss = data.task.loss(learner.model(x[task]), y[task])
        grads = torch.autograd.grad(loss, [learner.inner_parameters()[n] for n in names])
        for name, g in zip(names, grads, strict=True):
            expected = learner.inner_parameters()[name] - 0.5 * g
            assert torch.allclose(adapted[name][task], expected, atol=1e-5), name
        alone = Trials(data.family, trials.plan[task : task + 1]).make()
        own = learner.roll_out(alone, None, stream(alone.keys, "episode 0"))
        assert torch.equal(own.actions[0], rollouts.actions[task])  # keyed per trial


def test_the_meta_loss_of_a_batch_is_the_mean_of_its_tasks_losses() -> None:
    data = PointNavigation(rollouts=4, horizon=10)
    learner = small_maml(data)
    trials = some_trials(data, 3)
    loss, metrics = learner.meta_loss(trials)
    alone = [learner.meta_loss(Trials(data.family, trials.plan[i : i + 1]))[0] for i in range(3)]
    assert loss.item() == pytest.approx(torch.stack(alone).mean().item(), abs=1e-5)
    assert {"loss", "return", "return_before"} <= set(metrics)
    head = learner.model.head.weight
    (batched,) = torch.autograd.grad(loss, [head])
    (looped,) = torch.autograd.grad(torch.stack(alone).mean(), [head])
    assert torch.allclose(batched, looped, atol=1e-5)  # second order, through the inner step


def test_evaluation_adapts_at_each_episode_boundary_up_to_the_test_steps() -> None:
    data = PointNavigation(rollouts=4, horizon=5, episodes=3)
    learner = small_maml(data, test_inner_steps=1)
    env = some_trials(data, 2).make()
    policy = learner.policy()
    keys = stream(env.keys, "policy")
    policy.start(env, keys)
    observation = env.reset()
    adapted = []
    for _ in range(3 * 5):
        actions = policy.act(observation)
        step = env.step(actions)
        policy.observe(actions, step)
        observation = step.observation
        if bool(step.done.all()):
            adapted.append(policy.params)
    first = learner.roll_out(env, None, stream(keys, "episode 0"))  # the same first episode
    expected = learner.policy_step(None, first, True, None)
    assert adapted[0] is not None and adapted[1] is adapted[0]  # one step, then kept
    for name, value in expected.items():
        assert torch.allclose(adapted[0][name], value, atol=1e-6)


def test_short_meta_training_improves_the_adapted_return() -> None:
    data = PointNavigation(rollouts=10, horizon=20, episodes=2)
    learner = small_maml(data, meta_batch_size=10, test_inner_steps=1)
    fixed = FixedTrials(data.family, 20, seed=0)

    def adapted_return() -> float:
        return evaluate_policy(learner.policy, fixed).episode_returns[:, 1].mean().item()

    before = adapted_return()
    optimiser = torch.optim.Adam(learner.parameters(), lr=0.01)
    for step in range(1, 16):
        loss, _ = learner.meta_loss(some_trials(data, 10, seed=step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert adapted_return() > before + 1.0


@pytest.mark.parametrize(
    ("learner", "data", "says"),
    [
        (MAML, Bandits(), "MAML's policy is a Gaussian over continuous actions"),
        (MAMLPlusPlus, PointNavigation(), "MAMLPlusPlus is not defined on rollouts"),
    ],
)
def test_a_member_that_cannot_act_there_is_refused_naming_the_key(learner, data, says) -> None:
    with pytest.raises(ConfigError, match=f"^algorithm: {says}"):
        learner(SMALL_MLP, data.task)
