"""A trial played on a GPU is the trial played on the CPU (run where CUDA is available)."""

from __future__ import annotations

import pytest
import torch

from metarun.envs import BernoulliBandits, RandomMDPs
from metarun.envs.bandit_policies import UCB1, Gittins
from metarun.envs.evaluate import FixedTrials, evaluate_policy
from metarun.envs.policies import RandomPolicy
from metarun.envs.psrl import PSRL

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("make", [RandomPolicy, lambda: UCB1(0.2, (1.0, 1.0)), Gittins])
def test_bandit_trials_are_the_same_on_the_gpu(make) -> None:
    trials = FixedTrials(BernoulliBandits(arms=5, pulls=100), 300, 1)
    cpu = evaluate_policy(make, trials)
    gpu = evaluate_policy(make, trials, device="cuda")
    assert torch.equal(cpu.episode_returns, gpu.episode_returns)


@pytest.mark.parametrize("make", [RandomPolicy, PSRL])
def test_mdp_trials_are_the_same_on_the_gpu(make) -> None:
    trials = FixedTrials(RandomMDPs(episodes=3), 100, 1)
    cpu = evaluate_policy(make, trials)
    gpu = evaluate_policy(make, trials, device="cuda")
    # The same states and actions; rewards to float32 rounding of the Gaussian noise.
    assert torch.allclose(cpu.episode_returns, gpu.episode_returns, atol=1e-4)
