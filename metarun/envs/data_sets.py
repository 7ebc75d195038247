"""The ``dataset=`` options of tasks you act in: ``bandit``, ``tabular_mdp``, ``point_nav``.

Each wraps its task family (``metarun.envs``) with what the runner asks of a data set: the
``TaskSpec`` (input: the observation; outputs: the actions; metric: the trial's return) and a
sampler per split. Every split draws from the same distribution of tasks; the fixed validation
and test trials differ from the training stream, and from each other, by their seeds only
(``eval.seed`` and ``eval.seed + 1``), exactly as for the synthetic regression families.
"""

from __future__ import annotations

from typing import Any

from metarun.data.task import TaskSpec
from metarun.envs.bandit import BernoulliBandits
from metarun.envs.base import TaskFamily
from metarun.envs.point_nav import PointGoals
from metarun.envs.tabular_mdp import RandomMDPs
from metarun.envs.trials import TrialSampler


class TrialData:
    """A task family as a data set; ``acts`` tells the runner that its learners act."""

    acts = True

    def __init__(self, family: TaskFamily, task: TaskSpec) -> None:
        self.family = family
        self.task = task

    @property
    def episodes(self) -> int:
        """Episodes per trial."""
        return int(self.family.episodes if hasattr(self.family, "episodes") else 1)

    def sampler(self, split: str) -> TrialSampler:
        return TrialSampler(self.family)


class Bandits(TrialData):
    """``dataset=bandit``: k-armed Bernoulli bandits of ``pulls`` pulls (RL²'s first table)."""

    def __init__(self, **settings: Any) -> None:
        family = BernoulliBandits(**settings)
        super().__init__(family, TaskSpec("control", (0,), family.arms))

    @property
    def episodes(self) -> int:
        return self.family.pulls  # type: ignore[attr-defined]  # a pull is an episode


class TabularMDPs(TrialData):
    """``dataset=tabular_mdp``: random tabular MDPs, the state one-hot (RL²'s second table)."""

    def __init__(self, **settings: Any) -> None:
        family = RandomMDPs(**settings)
        super().__init__(family, TaskSpec("control", (family.states,), family.actions))


class PointNavigation(TrialData):
    """``dataset=point_nav``: MAML's 2-D point robot, a displacement per step."""

    def __init__(self, **settings: Any) -> None:
        family = PointGoals(**settings)
        super().__init__(family, TaskSpec("control", (2,), 2, continuous_actions=True))


__all__ = ["Bandits", "PointNavigation", "TabularMDPs", "TrialData"]
