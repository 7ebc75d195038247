"""Using a trained learner from Python: ``metarun.load``.

    learner = metarun.load("outputs/runs/<run>")        # or a .pt checkpoint
    x = torch.stack([learner.preprocess(img) for img in pil_images])
    classify = learner.adapt(support_x, support_y)       # any integer labels
    labels = classify(query_x)                           # in the same label space

The learner is rebuilt from the config stored in the checkpoint; the data set itself is not
needed, only its description (image size, channels, task kind).

A run on tasks you act in (``dataset=bandit``, ``tabular_mdp``, ``point_nav``) loads as an
``ActingLearner``: its ``adapt`` consumes what happened so far in a task (``Transitions``) and
returns the policy, which then acts in that task::

    agent = metarun.load("outputs/runs/<rl2 run>")
    env = agent.tasks(count=4, seed=123)                 # or any environment of that family
    policy = agent.adapt(env, transitions)               # or agent.policy(env): a fresh start
    action = policy.act(observation); policy.observe(action, env.step(action))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from metarun.data.task import TaskSpec
from metarun.envs.base import Environment, Step
from metarun.envs.data_sets import TrialData
from metarun.envs.policies import TrialPolicy
from metarun.envs.trials import Trials
from metarun.randomness import stream
from metarun.training.checkpoint import checkpoint_path, load_checkpoint


class AdaptedLearner:
    """A learner adapted to one task's support set."""

    def __init__(
        self, predict: Callable[[Tensor], Tensor], classes: Tensor | None, device: torch.device
    ) -> None:
        self._predict = predict
        self.classes = classes
        self.device = device

    @torch.no_grad()
    def logits(self, query_x: Tensor) -> Tensor:
        """Raw outputs: class scores ``[n, ways]`` (columns follow ``classes``), or regression
        values."""
        return self._predict(query_x.to(self.device)).cpu()

    def __call__(self, query_x: Tensor) -> Tensor:
        """Predicted labels (from the support set's label space), or regression values."""
        outputs = self.logits(query_x)
        if self.classes is None:
            return outputs
        # A fixed-size head (MAML) may have more outputs than this task has classes.
        return self.classes[outputs[..., : len(self.classes)].argmax(-1)]


@dataclass
class LoadedRun:
    """A run's learner rebuilt from its checkpoint, with its data set's description."""

    learner: Any
    data: Any
    config: dict[str, Any]
    device: torch.device

    @property
    def task(self) -> TaskSpec:
        return self.data.task


class FewShotLearner(LoadedRun):
    """A learner of labelled episodes: ``adapt`` on a support set, then predict."""

    def preprocess(self, raw: Any) -> Tensor:
        """A raw input (a PIL image for image data sets) as the tensor the model expects."""
        return self.data.preprocess(raw)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> AdaptedLearner:
        """Adapt to a new task given its labelled support set ``[n, ...]``, ``[n]``."""
        classes = None
        targets = support_y
        if self.task.kind == "classification":
            classes, targets = torch.unique(support_y, sorted=True, return_inverse=True)
        predict = self.learner.adapt(support_x.to(self.device), targets.to(self.device))
        return AdaptedLearner(predict, classes, self.device)


@dataclass
class Transitions:
    """What happened in ``[B]`` tasks over ``T`` steps, as a policy saw it: before step ``t``
    it observed ``observations[:, t]``, took ``actions[:, t]``, earned ``rewards[:, t]``; the
    step ended an episode where ``dones[:, t]``; ``reached[:, t]`` is the observation the step
    led to, before an episode's restart (tabular learners count these; default: the next
    observation)."""

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    dones: Tensor
    reached: Tensor | None = None

    def steps(self) -> Iterator[tuple[Tensor, Tensor, Step]]:
        """``(observation, action, step)`` for each of the ``T`` steps."""
        count = self.actions.shape[1]
        reached = self.reached
        if reached is None:
            following = self.observations[:, 1:]
            reached = torch.cat([following, self.observations[:, -1:]], dim=1)
        for t in range(count):
            upcoming = self.observations[:, t + 1] if t + 1 < count else reached[:, t]
            step = Step(upcoming, self.rewards[:, t], self.dones[:, t].bool(), reached[:, t])
            yield self.observations[:, t], self.actions[:, t], step


class ActingLearner(LoadedRun):
    """A trained learner (or strategy) of tasks you act in, and the family it was trained on."""

    def tasks(self, count: int, seed: int) -> Environment:
        """``count`` new tasks of the run's family, drawn from ``seed``, as environments."""
        plan = self.data.family.draw(count, torch.Generator().manual_seed(seed))
        return Trials(self.data.family, plan).to(self.device).make()

    def policy(self, env: Environment) -> TrialPolicy:
        """The policy started afresh on ``env``'s tasks (its draws from their keys, as in
        evaluation)."""
        policy = self.learner.policy()
        policy.start(env, stream(env.keys, "policy"))
        return policy

    @torch.no_grad()
    def adapt(self, env: Environment, transitions: Transitions) -> TrialPolicy:
        """The policy started on ``env`` that has lived through ``transitions``: each step is
        fed as if the policy had taken the recorded action, so what it learned about the task
        (RL²'s hidden state, a bandit strategy's counts) is what it would have learned playing
        them; it then acts on from step ``T``."""
        policy = self.policy(env)
        for observation, action, step in transitions.steps():
            policy.act(observation.to(self.device))  # advances the policy's own clock and state
            policy.observe(action.to(self.device), step)
        return policy


def rebuild(state: dict[str, Any]) -> tuple[Any, Any]:
    """The learner of a checkpoint's state, with its weights, and the description of the data
    it was trained on (its task; normalisation measured on its training data). Loads no data."""
    from metarun.run import build  # run.py builds learners the same way for training

    cfg = OmegaConf.create(state["config"])
    data = build(cfg, "dataset")
    if hasattr(data, "load_state_dict"):  # normalisation measured on the training data
        data.load_state_dict(state.get("data", {}))
    learner = build(cfg, "algorithm", model=build(cfg, "model"), task=data.task)
    learner.load_state_dict(state["learner"])
    return learner, data


def load(path: str | Path, device: str | torch.device = "cpu") -> FewShotLearner | ActingLearner:
    """The trained learner of a run directory (its best checkpoint) or of a ``.pt`` file."""
    state = load_checkpoint(checkpoint_path(path))
    learner, data = rebuild(state)
    device = torch.device(device)
    learner.to(device).eval()
    if isinstance(data, TrialData):
        return ActingLearner(learner, data, state["config"], device)
    return FewShotLearner(learner, data, state["config"], device)
