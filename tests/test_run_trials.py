"""``metarun.run`` on tasks you act in: the fixed strategies and RL² through the same runner,
scored on the trials a direct evaluation plays, and mismatched pairs refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

import metarun
from metarun.envs import BernoulliBandits
from metarun.envs.bandit_policies import UCB1
from metarun.envs.evaluate import FixedTrials, evaluate_policy
from metarun.errors import ConfigError
from metarun.run import RunContext, check_pairing, run

BASE = ["logger=none", "hardware=cpu", "eval.val_episodes=50", "eval.test_episodes=300"]


def test_a_baseline_is_tested_untrained_on_the_trials_from_eval_seed_plus_one(
    tmp_path, compose_config
) -> None:
    cfg = compose_config(["algorithm=ucb1", "dataset=bandit", "eval.seed=3", *BASE])
    run(cfg, RunContext(tmp_path, "ucb1"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    direct = evaluate_policy(
        lambda: UCB1(scale=0.2, prior=(1.0, 1.0)), FixedTrials(BernoulliBandits(5, 10), 300, 4)
    )
    mean, ci95 = direct.mean_ci95
    assert summary["test"]["mean"] == pytest.approx(mean, abs=1e-9)
    assert summary["test"]["ci95"] == pytest.approx(ci95, abs=1e-9)
    assert summary["test"]["extra"]["regret"] == pytest.approx(direct.regret.mean().item())
    assert summary["steps"] == 0 and summary["test"]["unit"] == "trials"
    assert len(summary["test"]["episode_returns"]) == 10  # a pull is an episode
    assert (tmp_path / "figures" / "test_returns_by_episode.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["algorithm=protonet", "dataset=bandit"], "ProtoNet learns from labelled examples"),
        (["algorithm=mamlpp", "dataset=point_nav"], "MAMLPlusPlus learns from labelled exam"),
        (["algorithm=platipus", "dataset=bandit"], "PLATIPUS learns from labelled examples"),
        (["algorithm=rl2", "dataset=sinusoid"], "RL2 acts in tasks"),
        (["algorithm=ucb1", "dataset=omniglot"], "ucb1 acts in tasks"),
    ],
)
def test_a_learner_and_data_set_of_other_kinds_are_refused_before_loading(
    overrides, says, compose_config
) -> None:
    with pytest.raises(ConfigError, match=f"^algorithm: {says}"):
        check_pairing(compose_config(overrides))


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["algorithm=ucb1", "dataset=tabular_mdp"], "ucb1 plays dataset=bandit"),
        (["algorithm=psrl", "dataset=bandit"], "psrl plays dataset=tabular_mdp"),
        (["algorithm=maml", "dataset=tabular_mdp"], "MAML's policy is a Gaussian over continuous"),
        (["algorithm=maml", "dataset=point_nav", "dataset.rollouts=0"], "dataset.rollouts"),
        (["algorithm=ucb1", "dataset=bandit", "dataset.arms=0"], "dataset.arms: must be"),
        (["algorithm=random", "dataset=tabular_mdp", "dataset.horizon=0"], "dataset.horizon"),
    ],
)
def test_bad_trial_settings_are_one_line_naming_the_key(
    overrides, says, tmp_path, compose_config
) -> None:
    with pytest.raises(ConfigError, match=f"^{says}|^algorithm: {says}"):
        run(compose_config([*overrides, *BASE]), RunContext(tmp_path, "bad"))


def test_maml_on_point_nav_trains_and_tests_before_and_after_adaptation(
    tmp_path, compose_config
) -> None:
    small = ["dataset.rollouts=4", "dataset.horizon=10", "model.hidden=[8]"]
    steps = ["algorithm.meta_batch_size=4", "trainer.max_steps=2", "trainer.val_every=2"]
    counts = ["eval.val_episodes=4", "eval.test_episodes=6"]
    cfg = compose_config(["algorithm=maml", "dataset=point_nav", *small, *steps, *BASE, *counts])
    run(cfg, RunContext(tmp_path, "maml_rl"))
    test = json.loads((tmp_path / "summary.json").read_text())["test"]
    assert len(test["episode_returns"]) == 4  # before adapting, then after 1, 2 and 3 steps
    assert test["extra"]["first_episode"] == pytest.approx(test["episode_returns"][0])
    assert test["extra"]["last_episode"] == pytest.approx(test["episode_returns"][-1])
    agent = metarun.load(tmp_path)
    direct = evaluate_policy(agent.learner.policy, FixedTrials(agent.data.family, 6, 1))
    assert test["mean"] == pytest.approx(direct.mean_ci95[0], abs=1e-4)
    env = agent.tasks(count=2, seed=5)  # one episode of random moves, then MAML adapts on it
    moves = torch.rand(2, 10, 4, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    observations, rewards, observation = [], [], env.reset()
    for t in range(10):
        observations.append(observation)
        step = env.step(moves[:, t])
        rewards.append(step.reward)
        observation = step.observation
    dones = torch.zeros(2, 10, dtype=torch.bool)
    dones[:, -1] = True
    recorded = metarun.Transitions(
        torch.stack(observations, 1), moves, torch.stack(rewards, 1), dones
    )
    policy = agent.adapt(env, recorded)
    assert policy.steps == 1 and policy.params is not None
    assert policy.act(observation).shape == (2, 4, 2)
