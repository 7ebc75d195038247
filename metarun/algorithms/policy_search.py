"""MAML-RL: the gradient family on tasks you act in (Finn, Abbeel & Levine 2017, ICML, §5.3),
on the same functional core as its supervised form (``metarun.algorithms.gradient``), so MAML,
Meta-SGD and ANIL learn to navigate through the hooks that make them differ on images.

What changes is where the support and query sets come from. A task's support set is a batch of
rollouts of the current policy in it (``dataset.rollouts`` point robots side by side, one
episode each), turned into the examples of the control task's loss (``TaskSpec.loss``): each
step's observation, the action taken and its centred advantage (``metarun.rl.reinforce``), so
the inner step is a policy-gradient (REINFORCE) step, ``theta' = theta - alpha * grad
-mean(log pi(a | s) * A)``, taken by the learner's own ``UpdateRule`` (MAML's SGD, Meta-SGD's
learned rates, ANIL's head only). The query set is a fresh batch of rollouts of the adapted
policy, and the outer loss is the same surrogate on it, differentiated back through the inner
step to the initialisation (second order unless ``first_order``).

As the authors' code runs it (``cbfinn/maml_rl``, read for these facts:
``maml_examples/maml_trpo_point.py``, ``sandbox/rocky/tf/algos/maml_npo.py``,
``batch_maml_polopt.py``): 20 rollouts of 100 steps per task (``fast_batch_size``), 40 tasks
per meta-batch, one inner step of 0.5 on the mean surrogate over the task's steps, discount
0.99, a ReLU MLP of (100, 100) with a learned log std (``metarun.models.gaussian_policy``);
the outer objective is the adapted policy's likelihood-ratio surrogate ``-mean(pi'(a|s) /
pi'_old(a|s) * A)``, whose gradient at the sampling policy is exactly the surrogate's here.

The outer step differs: the paper takes a TRPO step (a conjugate-gradient natural-gradient step
within a mean KL of 0.01, with a line search); metarun steps the trainer's optimiser (Adam) on
the surrogate, because the trainer's update is one optimiser step per meta-step and TRPO's
step needs Hessian-vector products of the KL through the inner step, which would be a learner
of its own (``Updating``). Like the paper (and ``tristandeleu/pytorch-maml-rl``), the
meta-gradient ignores how the pre-adaptation rollouts' distribution depends on the
initialisation (the term ProMP and DiCE later added).

Validation and test play a trial of ``dataset.episodes`` episodes: the initialisation's policy
in the first, then one inner step on each finished episode's rollouts, up to
``test_inner_steps`` steps (later episodes keep the last adapted policy), so the return per
episode is the MAML paper's figure: return after 0, 1, 2, ... gradient steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from metarun.data.task import batched_loss
from metarun.envs.base import Environment, Step
from metarun.envs.evaluate import play
from metarun.envs.point_nav_pictures import paths_before_and_after
from metarun.models.gaussian_policy import gaussian_sample
from metarun.randomness import fold, normal, stream
from metarun.rl.reinforce import centred_advantages

Params = dict[str, Tensor]


@dataclass
class Rollouts:
    """One episode of ``R`` rollouts in each of ``B`` tasks."""

    observations: Tensor
    """``[B, R, T, D]``: what the policy saw at each step."""
    actions: Tensor
    """``[B, R, T, A]``: what it did (before the environment clipped it)."""
    rewards: Tensor
    """``[B, R, T]``."""
    valid: Tensor
    """``[B, R, T]`` float: 1 while the rollout's path was running."""

    @property
    def returns(self) -> Tensor:
        """``[B]``: each task's mean return over its rollouts."""
        return (self.rewards * self.valid).sum(-1).mean(-1)

    def examples(self, gamma: float) -> tuple[Tensor, Tensor]:
        """The control task's examples ``x`` ``[B, R*T, D]`` and ``y`` ``[B, R*T, A + 1]``
        (action, weight): the weight is the centred advantage, scaled so that the loss's mean
        over all ``R*T`` steps is the mean over the valid ones (rllab's paths end on arrival)."""
        advantages = centred_advantages(self.observations, self.rewards, self.valid, gamma)
        steps = self.valid[0].numel()
        scale = steps / self.valid.sum((1, 2), keepdim=True).clamp(min=1)
        weights = (advantages * scale)[..., None]
        x = self.observations.flatten(1, 2)
        return x, torch.cat([self.actions, weights], dim=-1).flatten(1, 2)


@dataclass
class EpisodeRecord:
    """What one episode of a trial has shown so far, step by step."""

    observations: list[Tensor] = field(default_factory=list)
    actions: list[Tensor] = field(default_factory=list)
    rewards: list[Tensor] = field(default_factory=list)
    valid: list[Tensor] = field(default_factory=list)

    def record(self, observation: Tensor, actions: Tensor, step: Step) -> None:
        self.observations.append(observation)
        self.actions.append(actions)
        self.rewards.append(step.reward)
        active = step.active if step.active is not None else torch.ones_like(step.reward)
        self.valid.append(active.to(step.reward.dtype))

    def rollouts(self) -> Rollouts:
        return Rollouts(
            torch.stack(self.observations, dim=2),
            torch.stack(self.actions, dim=2),
            torch.stack(self.rewards, dim=2),
            torch.stack(self.valid, dim=2),
        )


class PolicySearch:
    """The gradient family's methods for tasks you act in; mixed into ``GradientLearner``,
    whose ``adapt_batch``, ``_query``, ``inner_steps``, ``test_inner_steps``, ``first_order``
    and ``discount`` they use."""

    discount: float
    acts_in_tasks = True
    """Whether this member of the family is defined on rollouts (MAML, Meta-SGD, ANIL)."""

    # -- the policy under given weights ----------------------------------------------------
    def policy_outputs(self, params: Params | None, observation: Tensor) -> Tensor:
        """``[B, R, 2A]``: each task's Gaussian at its rollouts' observations ``[B, R, D]``,
        under its adapted weights ``params`` (``[B, ...]``) or the initialisation's (None)."""
        if params is None:
            params = self.expanded_parameters(observation.shape[0])
        return self._query(params, observation, 0)

    def expanded_parameters(self, tasks: int) -> Params:
        """The inner loop's weights as ``[tasks, ...]`` views, one per task."""
        return {n: p.expand(tasks, *p.shape) for n, p in self.inner_parameters().items()}

    def sample_actions(
        self, params: Params | None, observation: Tensor, key: Tensor, t: int
    ) -> Tensor:
        """Actions ``[B, R, A]`` drawn from the policy, the noise from ``fold(key, t)``: a
        trial's actions depend on its key, the step and what it saw only."""
        out = self.policy_outputs(params, observation)
        noise = normal(fold(key, t), out.shape[1:-1] + (out.shape[-1] // 2,))
        return gaussian_sample(out, noise.to(out))

    @torch.no_grad()
    def roll_out(self, env: Environment, params: Params | None, key: Tensor) -> Rollouts:
        """One episode of every trial's rollouts, from the start (the environment is reset:
        the point robot's dynamics keep nothing between episodes)."""
        observation = env.reset()
        record = EpisodeRecord()
        for t in range(env.horizon):
            actions = self.sample_actions(params, observation, key, t)
            step = env.step(actions)
            record.record(observation, actions, step)
            observation = step.observation
        return record.rollouts()

    def policy_step(
        self, params: Params | None, rollouts: Rollouts, first_order: bool, keys: Tensor | None
    ) -> Params:
        """One inner step of every task on its rollouts, from ``params`` (None: the
        initialisation), by the learner's own update rule."""
        x, y = rollouts.examples(self.discount)
        return self.adapt_batch(x, y, 1, first_order, keys, start=params)[-1][1]

    # -- training --------------------------------------------------------------------------
    def policy_meta_loss(self, trials: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The outer loss on a meta-batch of trials: rollouts, ``inner_steps`` inner steps
        (fresh rollouts of the current policy before each), then the surrogate on rollouts of
        the adapted policy."""
        env = trials.make()
        keys = env.keys
        first_order = not self.second_order
        params = None
        before = None
        for step in range(self.inner_steps):
            rollouts = self.roll_out(env, _detached(params), stream(keys, f"episode {step}"))
            if before is None:
                before = rollouts.returns.mean()
            params = self.policy_step(params, rollouts, first_order, stream(keys, "inner"))
        rollouts = self.roll_out(env, _detached(params), stream(keys, "adapted"))
        x, y = rollouts.examples(self.discount)
        loss = batched_loss(self.task, self._query(params, x, 0), y)
        metrics = {"loss": loss.detach(), "return": rollouts.returns.mean()}
        return loss, {**metrics, "return_before": before}

    # -- validation, test and metarun.load ----------------------------------------------------
    def policy(self) -> AdaptingPolicy:
        return AdaptingPolicy(self)

    # -- pictures (metarun.algorithms.base.Illustrated) ------------------------------------
    @property
    def figure_episodes(self) -> int:
        """Trials drawn per validation: three on 2-D navigation, none elsewhere, unless a
        member that draws its own pictures (PLATIPUS, MetaGAN) sets its count."""
        chosen = self.__dict__.get("_figure_episodes")
        if chosen is not None:
            return chosen
        return 3 if self.task.kind == "control" and self.task.input_shape == (2,) else 0

    @figure_episodes.setter
    def figure_episodes(self, count: int) -> None:
        self.__dict__["_figure_episodes"] = count

    def figures(self, trials: Any) -> dict[str, bytes]:
        """``paths``: where the robots went in the first episode and in the last."""
        env = trials.make()
        goals = getattr(env, "goals", None)
        if goals is None:
            return {}
        policy = self.policy()
        episodes: list[Tensor] = []
        path: list[Tensor] = []

        def record(observation: Tensor, actions: Tensor, step: Step) -> None:
            if not path:  # an episode's first step: where it started
                path.append(observation)
            path.append(step.reached)
            if bool(step.done.all()):
                episodes.append(torch.stack(path, dim=2))
                path.clear()

        play(policy, env, on_step=record)
        positions = torch.stack(episodes, dim=1)
        return {"paths": paths_before_and_after(goals, positions, policy.steps)}


def _detached(params: Params | None) -> Params | None:
    return None if params is None else {n: p.detach() for n, p in params.items()}


class AdaptingPolicy:
    """Plays trials as MAML is evaluated: the initialisation's policy first, then one inner
    step on each finished episode's rollouts, up to the learner's ``test_inner_steps``."""

    def __init__(self, learner: PolicySearch) -> None:
        self.learner = learner

    def start(self, env: Environment, keys: Tensor) -> None:
        self.keys = keys
        self.params: Params | None = None
        self.steps = 0
        self.episode = 0
        self.t = 0
        self.record = EpisodeRecord()

    def act(self, observation: Tensor) -> Tensor:
        key = stream(self.keys, f"episode {self.episode}")
        self.observation = observation
        return self.learner.sample_actions(self.params, observation, key, self.t)

    def observe(self, actions: Tensor, step: Step) -> None:
        self.record.record(self.observation, actions, step)
        self.t += 1
        if not bool(step.done.all()):
            return
        if self.steps < self.learner.test_inner_steps:
            rollouts = self.record.rollouts()
            params = self.learner.policy_step(self.params, rollouts, True, None)
            self.params = _detached(params)
            self.steps += 1
        self.episode += 1
        self.t = 0
        self.record = EpisodeRecord()


__all__ = ["AdaptingPolicy", "EpisodeRecord", "PolicySearch", "Rollouts"]
