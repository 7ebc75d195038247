"""The one interface every meta-learner implements, and that the trainer, evaluation and
``metarun.load`` rely on.

A learner is an ``nn.Module`` (so parameters, ``state_dict`` and ``train``/``eval`` come for
free) that also satisfies ``MetaLearner``. Nothing is inherited: the Protocol only names what the
rest of metarun calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
"""Builds a backbone: ``factory(input_shape, out_features)``; ``out_features=None`` means an
embedding without a head. Model configs are partial, so architecture choices come from YAML and
the data-dependent sizes from the algorithm."""


def require_classification(task: TaskSpec, algorithm: str) -> None:
    """Metric and memory learners compare or label classes; regression is MAML's family's."""
    if task.kind != "classification":
        raise ConfigError(
            "algorithm",
            f"{algorithm} classifies, but the data set poses a {task.kind} task; use "
            f"algorithm=maml for it",
        )


@runtime_checkable
class MetaLearner(Protocol):
    meta_batch_size: int
    """Episodes per outer update."""

    autocast_safe: bool
    """Whether ``meta_loss`` may run under bf16 autocast without harming its gradients."""

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        """The episode shape to meta-train on, given the one evaluation uses (papers often
        train with more ways or other query counts than they test with)."""
        ...

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss the outer optimiser minimises over a meta-batch, and detached metrics to log
        (``loss`` and the task's score, ``acc`` or ``mse``)."""
        ...

    def predict(self, batch: EpisodeBatch) -> Tensor:
        """Query predictions ``[B, N*Q, outputs]`` after adapting to each episode's support set.
        Used by validation and test; must not build a graph to the meta-parameters."""
        ...

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        """Adapt to one new task; the returned function maps query inputs to predictions."""
        ...


@runtime_checkable
class Scheduled(Protocol):
    """A learner whose objective changes over meta-training (MAML++ anneals its multi-step loss
    weights and its derivative order). The trainer calls ``start_step`` before each meta-step;
    the learner's behaviour must follow from ``step`` alone, so a resumed run continues it."""

    def start_step(self, step: int, max_steps: int) -> None:
        """``step`` counts from 1 to ``max_steps`` (``trainer.max_steps``)."""
        ...


@runtime_checkable
class ClassSupervised(Protocol):
    """A learner that pre-trains a classifier over every training class (Baseline, Chen et al.
    2019) rather than on episode labels alone. Its head's size is the split's class count, which
    only the loaded data knows, so ``run.py`` passes it after building the learner and before
    building the optimiser. Episodes carry the global labels (``EpisodeBatch.classes``)."""

    def set_training_classes(self, count: int) -> None: ...


@runtime_checkable
class Illustrated(Protocol):
    """A learner with pictures of what it does (sampled functions, generated images), drawn on
    the first ``figure_episodes`` fixed validation episodes at every validation and on the test
    episodes at the end, and kept in the run directory (``figures/``) and W&B. Drawing must
    not change the learner or draw from torch's global generators (it runs on rank 0 only);
    like evaluation, it draws from ``metarun.randomness.EVALUATION_KEY``."""

    figure_episodes: int

    def figures(self, batch: EpisodeBatch) -> dict[str, bytes]:
        """PNG images by name (e.g. ``{"samples": png}``), logged as ``<split>/<name>``."""
        ...


@dataclass(frozen=True)
class Phase:
    """One update within a meta-step: the parameter group that steps and the loss it steps on
    (with detached metrics to log, like ``meta_loss``)."""

    group: str
    loss: Callable[[EpisodeBatch], tuple[Tensor, dict[str, Tensor]]]


@runtime_checkable
class Phased(Protocol):
    """A learner trained by several optimisers (an adversarial one: a discriminator and a
    generator). ``parameter_groups`` names disjoint groups covering every trainable parameter,
    each stepped by its own optimiser, from ``optimizers.<group>`` when configured and from
    ``optimizer`` otherwise (``metarun.training.optimisers``). Each meta-step runs ``phases``
    in order on the same meta-batch: compute the phase's loss with the parameters as the
    previous phases left them, backpropagate, average gradients across processes, clip, and
    step that group's optimiser alone. A group may appear several times (two generator steps
    per discriminator step). Metrics of later phases are logged next to earlier ones, so phases
    name theirs apart; one of them reports ``loss``."""

    def parameter_groups(self) -> dict[str, Sequence[nn.Parameter]]:
        """The groups by name; the first is the main one (its rate logs as ``train/lr``)."""
        ...

    def phases(self) -> Sequence[Phase]: ...


Update = Callable[[Tensor, dict[str, Tensor]], None]
"""The trainer's update of the learner's parameters from one loss: zero the gradients,
backpropagate, average across processes (with the metrics, in place), clip, step the optimiser
and its scheduler."""


@runtime_checkable
class Acting(Protocol):
    """A learner of tasks you act in (``metarun.envs``): validation and test play the fixed
    trials with a fresh ``policy()`` per batch (``metarun.envs.policies.TrialPolicy``), which
    is also what ``metarun.load`` hands out. A learner that trains takes ``Trials`` batches
    through ``meta_loss`` (one update per meta-step) or ``train_step`` (``Updating``); one
    with no parameters (a baseline such as UCB1) is evaluated without training."""

    meta_batch_size: int
    """Trials per meta-step."""

    def policy(self) -> Any: ...


@runtime_checkable
class Updating(Protocol):
    """A learner that makes several updates per meta-step on the data it gathered (PPO: epochs
    of minibatches over one rollout). ``train_step`` calls ``update`` once per update, so the
    trainer still backpropagates, averages across processes, clips and steps; it returns the
    step's detached metrics (``loss`` among them)."""

    def train_step(self, batch: Any, update: Update) -> dict[str, Tensor]: ...
