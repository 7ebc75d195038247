"""Scoring a policy on fixed trials: total return per trial, its mean and 95% CI, and regret.

``FixedTrials`` is ``FixedEpisodes`` for tasks you act in: a plan drawn once from a seed
(``eval.seed``), so every policy, learner and batch size plays the same tasks with the same
reward coins. A trial's return depends on its key and its own actions only, so the batch size
changes nothing but speed. The interval is ``metarun.intervals.mean_and_ci95``'s, the
one image episodes report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from metarun.data.episodes import FixedEpisodes
from metarun.envs.base import Environment, Step, TaskFamily
from metarun.envs.policies import TrialPolicy
from metarun.envs.trials import TrialSampler
from metarun.intervals import mean_and_ci95
from metarun.randomness import stream


class FixedTrials(FixedEpisodes):
    """The same ``count`` trials every time: ``FixedEpisodes``' plan drawn once from ``seed``,
    gathered into ``Trials`` (which make their environments where they are moved)."""

    def __init__(self, family: TaskFamily, count: int, seed: int) -> None:
        super().__init__(TrialSampler(family), count, seed)  # type: ignore[arg-type]
        self.family = family


@dataclass
class TrialPlay:
    """What a policy earned on a batch of trials."""

    episode_returns: Tensor
    """``[B, episodes]``: the return of each episode of each trial (the mean over its rollouts
    where a trial has several, ``metarun.envs.point_nav``)."""
    regret: Tensor | None
    """``[B]``: pseudo-regret, the best arm's expected reward times the pulls minus the chosen
    arms' expected rewards (bandits; None for environments without expected rewards)."""


def play(
    policy: TrialPolicy,
    env: Environment,
    on_step: Callable[[Tensor, Tensor, Step], None] | None = None,
) -> TrialPlay:
    """Play every trial of ``env`` to its end with ``policy`` (started afresh on them);
    ``on_step(observation, actions, step)`` sees every step (a learner's pictures)."""
    observation = env.reset()
    policy.start(env, stream(env.keys, "policy"))
    returns = []
    episode = None
    expected = getattr(env, "expected_reward", None)
    earned = None
    for _ in range(env.episodes * env.horizon):
        actions = policy.act(observation)
        if expected is not None:
            gain = expected(actions)
            earned = gain if earned is None else earned + gain
        step = env.step(actions)
        policy.observe(actions, step)
        if on_step is not None:
            on_step(observation, actions, step)
        reward = step.reward.reshape(len(step.reward), -1).mean(1)  # rollouts share a task
        episode = reward if episode is None else episode + reward
        if bool(step.done.all()):
            returns.append(episode)
            episode = None
        observation = step.observation
    regret = None
    if earned is not None:
        regret = env.best_expected_reward() * (env.episodes * env.horizon) - earned
    return TrialPlay(torch.stack(returns, dim=1), regret)


@dataclass(frozen=True)
class TrialResult:
    """Per-trial scores of one policy on fixed trials, and their summary."""

    returns: Tensor
    """``[trials]``: total return of each trial."""
    episode_returns: Tensor
    """``[trials, episodes]``."""
    regret: Tensor | None

    @property
    def mean_ci95(self) -> tuple[float, float]:
        return mean_and_ci95(self.returns)

    def line(self, split: str) -> str:
        """``test return 6.62 ± 0.05 (95% CI, 1000 trials)``, like the image runs' line."""
        mean, ci95 = self.mean_ci95
        return f"{split} return {mean:.2f} ± {ci95:.2f} (95% CI, {len(self.returns)} trials)"


def evaluate_policy(
    make_policy: Callable[[], TrialPolicy],
    trials: FixedTrials,
    batch_size: int = 10_000,
    device: torch.device | str = "cpu",
) -> TrialResult:
    """Play the fixed trials with a fresh policy per batch."""
    played = [play(make_policy(), batch.to(device).make()) for batch in trials.batches(batch_size)]
    episode_returns = torch.cat([p.episode_returns.cpu().double() for p in played])
    regrets = [p.regret for p in played]
    regret = None if regrets[0] is None else torch.cat([r.cpu().double() for r in regrets])
    return TrialResult(episode_returns.sum(dim=1), episode_returns, regret)
