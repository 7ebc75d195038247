"""The meta-training loop: sample a meta-batch, step the outer optimiser, validate on fixed
episodes, keep the best checkpoint.

The loop is the same for every algorithm: it only calls the ``MetaLearner`` methods. Its state
(``state_dict``) is everything a resumed run needs to continue exactly where the checkpoint was
written, so a resumed run logs the same numbers as one that never stopped.

It is also the same for one process and for several (``hardware=ddp``): every process draws the
same global meta-batch plan and gathers only its share of the tasks (``Runtime.shard``), each task
carrying the random key of its index in the run (``metarun.randomness.task_keys``), from which
alone the learner draws that task's random numbers; the meta-gradients, BatchNorm running
statistics and logged metrics are averaged across processes after ``backward``
(``Runtime.all_reduce_mean_``, a no-op for one process). Every process thus applies the update
one process would and keeps the same state; only rank 0 writes checkpoints.

A meta-step is a list of phases (``metarun.training.optimisers.phases``): one, ``meta_loss``
stepping every parameter, for most learners; several for a ``Phased`` learner, each stepping its
own parameter group with its own optimiser, averaged, clipped and logged per phase. An
``Updating`` learner (RL²'s PPO) makes its own sequence of updates on the data it gathered, each
through the same ``_update``, and its scheduler steps once per meta-step. A learner with no
parameters (a fixed strategy such as UCB1) has no optimiser: ``fit`` validates it once.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metarun.algorithms.base import MetaLearner, Scheduled, Updating
from metarun.data.episodes import EpisodeList, FixedEpisodes, TaskSampler
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError, MetarunError
from metarun.hardware import Runtime
from metarun.models.norm import PerStepBatchNorm
from metarun.randomness import task_keys
from metarun.tracking.console import Reporter
from metarun.tracking.logger import Logger
from metarun.training.checkpoint import Checkpoints
from metarun.training.evaluate import EvalResult, evaluate
from metarun.training.figures import illustrate
from metarun.training.optimisers import (
    Optimisers,
    check_steppable,
    parameter_groups,
    phases,
)
from metarun.training.preemption import Preempted, StopSignals


class TrainingDiverged(MetarunError):
    """The meta-loss became NaN or infinite."""


@dataclass
class TrainerConfig:
    max_steps: int
    val_every: int
    log_every: int = 10
    grad_clip: float | None = None
    grad_clip_value: float | None = None

    def __post_init__(self) -> None:
        for key, value, least in (
            ("max_steps", self.max_steps, 0),
            ("val_every", self.val_every, 1),
            ("log_every", self.log_every, 1),
        ):
            if value < least:
                raise ConfigError(f"trainer.{key}", f"must be at least {least}, got {value}")
        clips = (("grad_clip", self.grad_clip), ("grad_clip_value", self.grad_clip_value))
        for key, value in clips:
            if value is not None and not value > 0:
                raise ConfigError(f"trainer.{key}", f"must be null or positive, got {value}")


def check_meta_batch(meta_batch_size: int, world_size: int) -> None:
    """The global meta-batch must split evenly across processes, so that the mean of their
    meta-gradients is the meta-gradient of the whole meta-batch."""
    if meta_batch_size % world_size:
        raise ConfigError(
            "algorithm.meta_batch_size",
            f"{meta_batch_size} tasks cannot be split evenly across {world_size} processes; "
            f"use a multiple of {world_size}",
        )


def running_statistics(module: torch.nn.Module) -> list[Tensor]:
    """The BatchNorm running means and variances: the state a forward pass changes, which
    processes must average to stay identical (their update is linear in the batch statistics,
    so the average equals what one process would compute on the whole meta-batch)."""
    return [
        buffer
        for layer in module.modules()
        if isinstance(layer, torch.nn.modules.batchnorm._NormBase | PerStepBatchNorm)
        for buffer in (layer.running_mean, layer.running_var)
        if buffer is not None
    ]


def mean_over_episodes(loss_of: Any, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """``loss_of(batch)``, or for episodes of different shapes the mean of each one's loss and
    metrics: the meta-loss of the meta-batch, as a batched call would average it."""
    if not isinstance(batch, EpisodeList):
        return loss_of(batch)
    losses, columns = [], {}
    for episode in batch.episodes:
        loss, metrics = loss_of(episode)
        losses.append(loss)
        for name, value in metrics.items():
            columns.setdefault(name, []).append(value)
    mean = lambda values: torch.stack(values).mean()  # noqa: E731
    return mean(losses), {name: mean(values) for name, values in columns.items()}


class Trainer:
    def __init__(
        self,
        *,
        learner: MetaLearner,
        optimizer: torch.optim.Optimizer | Optimisers | None,
        scheduler: Any | None,
        sampler: TaskSampler,
        val_episodes: FixedEpisodes,
        task: TaskSpec,
        runtime: Runtime,
        generator: torch.Generator,
        seed: int,
        checkpoints: Checkpoints,
        logger: Logger,
        reporter: Reporter,
        config: TrainerConfig,
        eval_batch_size: int,
        run_state: dict[str, Any],
        on_validation: Callable[[EvalResult, int], None] | None = None,
    ) -> None:
        """``optimizer``: one optimiser (and ``scheduler``) for a learner with one parameter
        group, ``Optimisers``, one per group (``scheduler`` then None), or None for a learner
        with no parameters (nothing to train). ``on_validation(result, step)`` runs on the main
        process after each validation (``eval.val_episode_rows`` writes the episodes' rows)."""
        self.learner = learner
        if optimizer is not None and not isinstance(optimizer, Optimisers):
            optimizer = Optimisers.single(optimizer, scheduler)
        elif scheduler is not None:
            raise ValueError("Optimisers hold their groups' schedulers; pass scheduler=None")
        self.optimizers = optimizer
        self.trains = optimizer is not None
        if optimizer is not None and not isinstance(learner, Updating):
            self.phases = phases(learner)  # type: ignore[arg-type]
            check_steppable(self.phases, optimizer, parameter_groups(learner))  # type: ignore[arg-type]
        self.sampler = sampler
        self.val_episodes = val_episodes
        self.task = task
        self.runtime = runtime
        self.generator = generator
        self.seed = seed
        self.checkpoints = checkpoints
        self.logger = logger
        self.reporter = reporter
        self.config = config
        self.eval_batch_size = eval_batch_size
        self.run_state = run_state
        self.on_validation = on_validation
        check_meta_batch(learner.meta_batch_size, runtime.world_size)
        self.step = 0
        self.train_seconds = 0.0  # wall time of training, validation included
        self.step_seconds = 0.0  # time inside training steps only
        self.best_score: float | None = None
        self.best_step: int | None = None
        self._last_loss: Tensor | None = None
        self._clock = (time.perf_counter(), 0.0)  # (session start, train_seconds before it)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "step_seconds": self.step_seconds,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "learner": self.learner.state_dict(),
            # optimizer, scheduler, optimizers (other groups)
            **(self.optimizers.state_dict() if self.optimizers is not None else {}),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
                "sampler": self.generator.get_state(),
            },
            **self.run_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        if self.optimizers is not None:
            self.optimizers.load_state_dict(state)
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.generator.set_state(state["rng"]["sampler"])
        self.step = state["step"]
        self.train_seconds = state["train_seconds"]
        self.step_seconds = state.get("step_seconds", 0.0)  # absent from older checkpoints
        self.best_score = state["best_score"]
        self.best_step = state["best_step"]

    @property
    def episodes_per_second(self) -> float:
        """Training throughput over the whole run, validation excluded."""
        episodes = self.step * self.learner.meta_batch_size
        return episodes / self.step_seconds if self.step_seconds > 0 else 0.0

    # -- loop ------------------------------------------------------------------------------
    def fit(self, stop: StopSignals | None = None) -> None:
        """Train to ``max_steps``; a stop signal ends it after the current step with
        ``last.pt`` written (``Preempted``)."""
        config = self.config
        self.runtime.check_same_everywhere(
            list(self.learner.state_dict().values()), "learner parameters"
        )
        self._clock = (time.perf_counter(), self.train_seconds)
        self.reporter.start(config.max_steps, self.step)
        try:
            window_start, window_steps = time.perf_counter(), 0
            last = config.max_steps if self.trains else self.step  # nothing to train: no step
            for step in range(self.step + 1, last + 1):
                step_start = time.perf_counter()
                metrics = self._train_step(step)
                self.step_seconds += time.perf_counter() - step_start
                self.step, window_steps = step, window_steps + 1
                record: dict[str, float] = {}
                if step % config.log_every == 0 or step == config.max_steps:
                    record.update(self._train_record(metrics))
                    elapsed = time.perf_counter() - window_start
                    record["perf/episodes_per_s"] = (
                        window_steps * self.learner.meta_batch_size / max(elapsed, 1e-9)
                    )
                    window_start, window_steps = time.perf_counter(), 0
                if step % config.val_every == 0 or step == config.max_steps:
                    record.update(self._validate_and_save())
                    window_start, window_steps = time.perf_counter(), 0
                if record:
                    self.logger.log(record, step)
                self.reporter.update(step, record)
                if stop is not None and self.runtime.any_rank(stop.received is not None):
                    self._save_and_stop(stop.received or signal.SIGTERM)
        finally:
            self.reporter.close()
        if self.best_step is None:  # never validated (max_steps=0): judge the initialisation
            self.logger.log(self._validate_and_save(), self.step)

    def _train_step(self, step: int) -> dict[str, Tensor]:
        if isinstance(self.learner, Scheduled):
            self.learner.start_step(step, self.config.max_steps)
        # The whole meta-batch's plan, identical on every process (same generator state), of
        # which each gathers only its own tasks; each task carries the random key of its
        # global index, so what it draws does not depend on the process that computes it.
        plan = self.sampler.draw(self.learner.meta_batch_size, self.generator)
        mine = self.runtime.shard(len(plan))
        keys = task_keys(self.seed, step, len(plan))[mine]
        batch = self.sampler.gather(plan[mine]).with_keys(keys)
        batch = batch.to(self.runtime.device, non_blocking=True)
        metrics: dict[str, Tensor] = {}
        if isinstance(self.learner, Updating):
            group = self.optimizers.first
            metrics = self.learner.train_step(
                batch, lambda loss, logged: self._update(group, loss, logged, schedule=False)
            )
            self.optimizers[group].schedule()
        else:
            for phase in self.phases:
                metrics.update(self._phase(phase.group, phase.loss, batch))
        self._last_loss = metrics["loss"]
        return metrics

    def _phase(self, group: str, loss_of: Any, batch: Any) -> dict[str, Tensor]:
        """One update of one parameter group on its loss on the meta-batch (the mean of its
        episodes' losses where they differ in shape, ``EpisodeList``)."""
        with self.runtime.autocast(self.learner.autocast_safe):
            loss, metrics = mean_over_episodes(loss_of, batch)
        self._update(group, loss, metrics)
        return metrics

    def _update(
        self, group: str, loss: Tensor, metrics: dict[str, Tensor], schedule: bool = True
    ) -> None:
        """Backpropagate ``loss``, average the gradients (and ``metrics``, in place) across
        processes, clip them, step the group's optimiser (and its scheduler, if ``schedule``).
        The gradient norm joins ``metrics`` when ``trainer.grad_clip`` is set."""
        optimiser = self.optimizers[group]
        # Every gradient, not only the group's: a phase's loss may reach other groups, whose
        # gradients must not leak into their own later step.
        self.learner.zero_grad(set_to_none=True)
        loss.backward()
        self._average_across_processes(metrics, optimiser.gradients())
        if self.config.grad_clip_value is not None:  # each entry, before the norm (MAML's code)
            torch.nn.utils.clip_grad_value_(optimiser.parameters, self.config.grad_clip_value)
        if self.config.grad_clip is not None:
            metrics[f"grad_norm{self.optimizers.suffix(group)}"] = torch.nn.utils.clip_grad_norm_(
                optimiser.parameters, self.config.grad_clip
            )
        optimiser.step(schedule)

    def _average_across_processes(
        self, metrics: dict[str, Tensor], gradients: list[Tensor]
    ) -> None:
        """A phase's gradients, the running statistics and its metrics, averaged over processes
        in one collective, before clipping and the optimiser step (nothing happens in a world
        of one)."""
        if self.runtime.world_size == 1:
            return
        self.runtime.all_reduce_mean_(
            [*gradients, *running_statistics(self.learner), *metrics.values()]
        )

    def _train_record(self, metrics: dict[str, Tensor]) -> dict[str, float]:
        record = {f"train/{name}": value.item() for name, value in metrics.items()}
        self._check_finite()
        record.update({f"train/{k}": v for k, v in self.optimizers.learning_rates().items()})
        return record

    def _check_finite(self) -> None:
        # Checked at log and checkpoint steps only: a per-step check would sync the GPU.
        if self._last_loss is not None and not math.isfinite(self._last_loss.item()):
            raise TrainingDiverged(
                f"meta-loss became {self._last_loss.item()} by step {self.step}; lower "
                f"optimizer.lr or algorithm.inner_lr, or set trainer.grad_clip (the last "
                f"checkpoint is intact)"
            )

    def _validate_and_save(self) -> dict[str, float]:
        self._check_finite()
        self._update_train_seconds()
        result = self.validate()
        illustrate(
            self.learner, self.val_episodes, self.runtime, self.logger, self.step, "val", result
        )
        if self.on_validation is not None and self.runtime.is_main:
            self.on_validation(result, self.step)
        improved = self.task.is_better(result.mean, self.best_score)
        if improved:
            self.best_score, self.best_step = result.mean, self.step
        if self.runtime.is_main:
            self.checkpoints.save(self.state_dict(), best=improved)
        return {**result.metrics("val"), f"val/best_{result.metric}": self.best_score}

    def _update_train_seconds(self) -> None:
        started, before = self._clock
        self.train_seconds = before + time.perf_counter() - started

    def _save_and_stop(self, signum: int) -> None:
        """Every process stops at the same step, whichever got the signal; rank 0 writes
        ``last.pt`` and the others wait for it, since the first to exit ends them all."""
        self._check_finite()
        self._update_train_seconds()
        if self.runtime.is_main:
            self.checkpoints.save(self.state_dict(), best=False)
        self.runtime.barrier()
        raise Preempted(signum, self.step)

    def validate(self) -> EvalResult:
        return evaluate(
            self.learner, self.val_episodes, self.task, self.runtime, self.eval_batch_size
        )
