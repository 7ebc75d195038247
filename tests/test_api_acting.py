"""``metarun.load`` of a run on tasks you act in: the policy scores the run's test trials as the
run did, and ``adapt`` on a task's transitions leaves it where playing them would have."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import TINY_RL2 as TINY

import metarun
from metarun.envs.evaluate import FixedTrials, evaluate_policy
from metarun.run import RunContext, run

TINY_RL2 = [*TINY, "trainer.max_steps=2", "trainer.val_every=1", "eval.test_episodes=40"]


@pytest.fixture(scope="module")
def rl2_run(tmp_path_factory, compose_config):
    run_dir = tmp_path_factory.mktemp("rl2")
    run(compose_config(TINY_RL2), RunContext(run_dir, "rl2"))
    return run_dir


def test_a_loaded_policy_scores_the_runs_test_trials_as_the_run_did(rl2_run) -> None:
    agent = metarun.load(rl2_run)
    assert isinstance(agent, metarun.ActingLearner)
    summary = json.loads((rl2_run / "summary.json").read_text())
    trials = FixedTrials(agent.data.family, 40, 1)  # eval.seed + 1
    mean, _ = evaluate_policy(agent.learner.policy, trials).mean_ci95
    assert mean == pytest.approx(summary["test"]["mean"], abs=1e-9)


def test_adapt_on_transitions_equals_having_played_them(rl2_run) -> None:
    agent = metarun.load(rl2_run)
    env = agent.tasks(count=6, seed=7)
    played = agent.policy(env)
    observation = env.reset()
    record: dict[str, list[torch.Tensor]] = {"observations": [], "actions": [], "rewards": []}
    dones = []
    for _ in range(4):
        action = played.act(observation)
        step = env.step(action)
        played.observe(action, step)
        record["observations"].append(observation)
        record["actions"].append(action)
        record["rewards"].append(step.reward)
        dones.append(step.done)
        observation = step.observation
    transitions = metarun.Transitions(
        **{name: torch.stack(values, dim=1) for name, values in record.items()},
        dones=torch.stack(dones, dim=1),
    )
    adapted = agent.adapt(agent.tasks(count=6, seed=7), transitions)
    torch.testing.assert_close(adapted.state, played.state)  # the GRU lived through them
    fresh = agent.policy(agent.tasks(count=6, seed=7))
    assert not torch.allclose(fresh.state, played.state)
    assert torch.equal(adapted.act(observation), played.act(observation))
