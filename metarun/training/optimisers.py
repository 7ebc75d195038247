"""The optimisers of a learner: one per named parameter group, each with its own scheduler.

Most learners train all their parameters with one optimiser: one group, ``DEFAULT_GROUP``, built
from the ``optimizer``/``scheduler`` config, and stepped once per meta-step on ``meta_loss``. An
adversarial learner (MetaGAN) is ``Phased``: it names several groups and the phases of a
meta-step (which group steps, on which loss, in which order), and each group may have its own
config under ``optimizers.<group>``. The trainer only ever sees ``Optimisers`` and phases, so it
has no case for any algorithm.

The checkpoint keeps the layout of one optimiser for the first group (``optimizer``,
``scheduler``) and adds the others under ``optimizers``, so checkpoints written before there
were several groups still load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from metarun.algorithms.base import Phase, Phased
from metarun.errors import CheckpointError

DEFAULT_GROUP = "learner"
"""The one group of a learner that declares none: all its parameters, stepped on ``meta_loss``."""

MakeOptimiser = Callable[[str, list[nn.Parameter]], tuple[torch.optim.Optimizer, Any | None]]
"""``make(group, parameters) -> (optimizer, scheduler or None)``."""


def parameter_groups(learner: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The learner's groups, first the one whose optimiser logs as ``train/lr``. Groups may not
    share a parameter, and every trainable parameter must be in one (else it would silently
    never train)."""
    if not isinstance(learner, Phased):
        return {DEFAULT_GROUP: [p for p in learner.parameters() if p.requires_grad]}
    groups = {name: list(params) for name, params in learner.parameter_groups().items()}
    seen: dict[int, str] = {}
    for name, params in groups.items():
        for p in params:
            if id(p) in seen:
                raise ValueError(f"a parameter is in both group {seen[id(p)]!r} and {name!r}")
            seen[id(p)] = name
    orphans = [n for n, p in learner.named_parameters() if p.requires_grad and id(p) not in seen]
    if orphans:
        raise ValueError(f"parameters in no group would never train: {', '.join(orphans[:5])}")
    return groups


def phases(learner: nn.Module) -> list[Phase]:
    """The updates of one meta-step, in order: the learner's, or one of the default group on
    ``meta_loss``."""
    if not isinstance(learner, Phased):
        return [Phase(DEFAULT_GROUP, learner.meta_loss)]
    return list(learner.phases())


@dataclass
class GroupOptimiser:
    """One group's parameters, optimiser and (optional) scheduler."""

    parameters: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any | None = None

    def step(self, schedule: bool = True) -> None:
        """One optimiser step and, unless ``schedule`` is False, one scheduler step."""
        self.optimizer.step()
        if schedule:
            self.schedule()

    def schedule(self) -> None:
        """One scheduler step (a learner with several updates per meta-step, ``Updating``,
        schedules once per meta-step, so that ``T_max: ${trainer.max_steps}`` means the run)."""
        if self.scheduler is not None:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def gradients(self) -> list[Tensor]:
        return [p.grad for p in self.parameters if p.grad is not None]

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])


class Optimisers:
    """The groups' optimisers by name, in the learner's order (the first is the main one)."""

    def __init__(self, groups: dict[str, GroupOptimiser]) -> None:
        if not groups:
            raise ValueError("a learner needs at least one parameter group")
        self.groups = groups
        self.first = next(iter(groups))

    @classmethod
    def single(cls, optimizer: torch.optim.Optimizer, scheduler: Any | None = None) -> Optimisers:
        """One optimiser for every parameter it holds: the default group."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return cls({DEFAULT_GROUP: GroupOptimiser(params, optimizer, scheduler)})

    def __getitem__(self, group: str) -> GroupOptimiser:
        if group not in self.groups:
            raise KeyError(f"no optimiser for group {group!r}; groups: {', '.join(self.groups)}")
        return self.groups[group]

    def __iter__(self) -> Iterator[str]:
        return iter(self.groups)

    def suffix(self, group: str) -> str:
        """How a group's metrics are named: the main group's plainly (``lr``, ``grad_norm``),
        the others' with ``_<group>``."""
        return "" if group == self.first else f"_{group}"

    def learning_rates(self) -> dict[str, float]:
        return {f"lr{self.suffix(name)}": group.lr for name, group in self.groups.items()}

    def state_dict(self) -> dict[str, Any]:
        main, *others = self.groups
        return {
            **self.groups[main].state_dict(),
            "optimizers": {name: self.groups[name].state_dict() for name in others},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        main, *others = self.groups
        self.groups[main].load_state_dict(state)
        saved = state.get("optimizers", {})  # absent from single-optimiser checkpoints
        missing = [name for name in others if name not in saved]
        if missing:
            raise CheckpointError(
                f"the checkpoint has no optimiser state for group(s) {', '.join(missing)}: it "
                f"was written by a learner with other parameter groups"
            )
        for name in others:
            self.groups[name].load_state_dict(saved[name])


def check_steppable(
    steps: list[Phase], optimisers: Optimisers, groups: dict[str, list[nn.Parameter]]
) -> None:
    """Every group of a learner with several has its optimiser, and every phase steps one."""
    if len(groups) > 1 and set(groups) != set(optimisers):
        raise ValueError(f"optimisers for {list(optimisers)}, but the groups are {list(groups)}")
    unknown = sorted({phase.group for phase in steps} - set(optimisers))
    if unknown:
        raise ValueError(f"phases step group(s) without an optimiser: {unknown}")


def build_optimisers(learner: nn.Module, make: MakeOptimiser) -> Optimisers:
    """An optimiser (and scheduler) per parameter group of ``learner``."""
    groups = {}
    for name, params in parameter_groups(learner).items():
        optimizer, scheduler = make(name, params)
        groups[name] = GroupOptimiser(params, optimizer, scheduler)
    return Optimisers(groups)


__all__ = [
    "DEFAULT_GROUP",
    "GroupOptimiser",
    "Optimisers",
    "build_optimisers",
    "check_steppable",
    "parameter_groups",
    "phases",
]
