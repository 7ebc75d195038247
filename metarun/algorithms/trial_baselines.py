"""Fixed strategies as algorithms (``algorithm=random|ucb1|thompson|gittins|psrl``), so that one
sweep over ``algorithm`` makes RL²'s tables (Duan et al. 2016, Tables 1 and 2): each is scored
on the same fixed trials as the learners, and none trains (no parameters: the runner validates
and tests it without a meta-step).

The strategies themselves live in ``metarun.envs`` (``policies``, ``bandit_policies``,
``psrl``), where their sources are cited; this module only states which tasks each can play.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from torch import nn

from metarun.data.task import TaskSpec
from metarun.envs.policies import TrialPolicy
from metarun.errors import ConfigError

Plays = Literal["discrete", "bandit", "tabular"]

DATASETS = {
    "discrete": "dataset=bandit or tabular_mdp",
    "bandit": "dataset=bandit",
    "tabular": "dataset=tabular_mdp",
}


def plays(task: TaskSpec, kind: Plays) -> bool:
    """Whether a data set's tasks are of the kind a strategy plays: discrete actions; and a
    bandit's empty observation, or a tabular MDP's one-hot state."""
    if task.kind != "control" or task.continuous_actions:
        return False
    if kind == "bandit":
        return task.input_shape == (0,)
    if kind == "tabular":
        return task.input_shape != (0,)
    return True


def described(task: TaskSpec) -> str:
    """A data set's kind of task in a word or two, for error messages."""
    if task.kind != "control":
        return task.kind
    if task.continuous_actions:
        return "continuous-action control"
    return "bandit" if task.input_shape == (0,) else "tabular MDP"


class PolicyBaseline(nn.Module):
    """A strategy with nothing to learn: ``policy()`` is a fresh one for every batch."""

    meta_batch_size = 1  # unused: there is no meta-step
    autocast_safe = True

    def __init__(self, make_policy: Callable[[], TrialPolicy], name: str) -> None:
        super().__init__()
        self.make_policy = make_policy
        self.name = name

    @classmethod
    def for_task(
        cls,
        model: Any,
        task: TaskSpec,
        policy: Callable[[], TrialPolicy],
        name: str,
        plays_on: Plays = "discrete",
    ) -> PolicyBaseline:
        """The runner's constructor (``model`` is unused: the strategy has no network)."""
        if not plays(task, plays_on):
            raise ConfigError(
                "algorithm",
                f"{name} plays {DATASETS[plays_on]}, but the data set poses "
                f"{described(task)} tasks",
            )
        return cls(policy, name)

    def policy(self) -> TrialPolicy:
        return self.make_policy()


__all__ = ["PolicyBaseline", "plays"]
