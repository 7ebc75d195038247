"""One experiment, top to bottom: read this file to see everything a run does.

Build the data, the learner, the optimiser and the loggers from the config; meta-train with
periodic validation on fixed episodes; test the best checkpoint on fixed episodes; write
``summary.json`` and print the result with its 95% confidence interval. This is the one place
that calls ``hydra.utils.instantiate``.

Under ``hardware=ddp`` every process runs this function: rank 0 decides what to resume from and
broadcasts it, every process trains and evaluates its share, and only rank 0 logs and writes
files (checkpoints, ``metrics.jsonl``, W&B, ``summary.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from metarun.algorithms.base import ClassSupervised
from metarun.atomic import atomic_write_text
from metarun.config_types import check_config, check_group
from metarun.continuing import (
    check_same_member,
    read_complete_summary,
    resume_from,
    stable_run_id,
    warn_about_changes,
)
from metarun.data.episodes import (
    EpisodeSpec,
    FixedEpisodes,
    FixedTrainingEpisodes,
    TaskSampler,
)
from metarun.data.task import TaskSpec
from metarun.envs.data_sets import TrialData
from metarun.errors import ConfigError, MetarunError
from metarun.hardware import Runtime
from metarun.pretrained import PretrainedSource, freeze_encoder, load_encoder, read_source
from metarun.pretrained import check_settings as check_pretrained
from metarun.provenance import git_state, package_versions
from metarun.shape_checks import check_count, check_shapes
from metarun.tracking.console import NullReporter, make_reporter
from metarun.tracking.figure_files import FigureFiles
from metarun.tracking.logger import Logger, LoggerGroup, RunIdentity, swept_values
from metarun.tracking.metrics_file import MetricsFile
from metarun.tracking.null import NullLogger
from metarun.training.checkpoint import Checkpoints, load_checkpoint
from metarun.training.episode_records import EPISODES_CSV, episode_table
from metarun.training.evaluate import EvalResult, evaluate
from metarun.training.figures import illustrate
from metarun.training.inference import inference_kind
from metarun.training.optimisers import Optimisers, parameter_groups
from metarun.training.optimisers import build_optimisers as build_optimisers_for
from metarun.training.preemption import Preempted, StopSignals
from metarun.training.trainer import Trainer, TrainerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Where a job writes and how it is named; ``cli.py`` fills it from Hydra."""

    run_dir: Path
    name: str
    group: str | None = None
    job_type: str = "train"
    sweep_member: bool = False  # a numbered member of a multirun: continued in place on re-run
    overrides: tuple[str, ...] = ()  # the command line's, kept in checkpoints


def build(cfg: DictConfig, key: str, **runtime_args: Any) -> Any:
    """Instantiate ``cfg[key]``, reporting constructor errors against ``key``.

    Groups whose objects need other built objects (model, algorithm, optimizer, scheduler,
    logger) are partial in YAML; ``runtime_args`` supplies those objects here, in Python, so
    Hydra never converts them to configs. Values are checked against the constructor's
    annotations first (``metarun.config_types``), so a wrong type names its key.
    """
    check_group(cfg, key)
    try:
        made = instantiate(cfg[key])
        return made(**runtime_args) if runtime_args else made
    except MetarunError:
        raise
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, MetarunError):
            raise cause from None
        reason = f"{type(cause).__name__}: {cause}" if cause else str(error).splitlines()[0]
        raise ConfigError(key, f"cannot be built ({reason})") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(key, f"cannot be built ({type(error).__name__}: {error})") from None


def check_learning_rate(cfg: DictConfig) -> None:
    configured = {"optimizer": cfg.optimizer}
    for group, own in (cfg.get("optimizers") or {}).items():
        configured[f"optimizers.{group}.optimizer"] = own.optimizer
    for key, optimizer in configured.items():
        lr = optimizer.get("lr")
        if lr is not None and not lr > 0:
            raise ConfigError(f"{key}.lr", f"must be positive, got {lr}")


def build_optimisers(cfg: DictConfig, learner: torch.nn.Module) -> Optimisers:
    """One optimiser and scheduler per parameter group of the learner: a group's own config
    under ``optimizers.<group>`` (``optimizer`` and ``scheduler`` keys, as the optimizer group
    composes them there), else the run's ``optimizer`` and ``scheduler``."""
    own = cfg.get("optimizers") or {}
    groups = parameter_groups(learner)
    unknown = sorted(set(own) - set(groups))
    if unknown:
        raise ConfigError(
            f"optimizers.{unknown[0]}", f"names no parameter group; groups: {', '.join(groups)}"
        )

    def make(group: str, params: list[torch.nn.Parameter]) -> tuple[Any, Any]:
        where = cfg.optimizers[group] if group in own else cfg
        try:
            optimizer = build(where, "optimizer", params=params)
            if not where.get("scheduler"):
                return optimizer, None
            return optimizer, build(where, "scheduler", optimizer=optimizer)
        except ConfigError as error:
            if group not in own:
                raise
            reason = str(error).split(": ", 1)[-1]
            raise ConfigError(f"optimizers.{group}.{error.key}", reason) from None

    return build_optimisers_for(learner, make)


def check_evaluation(cfg: DictConfig) -> None:
    for key in ("val_episodes", "test_episodes", "batch_size"):
        check_count(f"eval.{key}", cfg.eval[key], 1)


def training_keys(train: EpisodeSpec, evaluation: EpisodeSpec) -> tuple[str, str, str]:
    """Config keys behind the training episode shape, for error messages."""
    return (
        "algorithm.train_ways" if train.ways != evaluation.ways else "dataset.ways",
        "algorithm.train_shots" if train.shots != evaluation.shots else "dataset.shots",
        "algorithm.train_queries" if train.queries != evaluation.queries else "dataset.queries",
    )


def target_of(cfg: DictConfig, key: str) -> Any:
    """The class (or a classmethod's class) a group's ``_target_`` names; None if it names
    nothing importable (``build`` then reports it)."""
    target = (cfg.get(key) or {}).get("_target_")
    try:
        found = get_object(target) if target else None
    except Exception:
        return None
    return getattr(found, "__self__", found)


def check_pairing(cfg: DictConfig) -> None:
    """A learner of labelled examples cannot act, and an acting learner has no examples to
    learn from: say so before any data is loaded (an image data set may take minutes)."""
    data, learner = target_of(cfg, "dataset"), target_of(cfg, "algorithm")
    if data is None or learner is None:
        return
    name = cfg.algorithm.get("name") or learner.__name__  # a strategy's config names it
    can_act = hasattr(learner, "policy") and getattr(learner, "acts_in_tasks", True)
    if getattr(data, "acts", False) and not can_act:
        raise ConfigError(
            "algorithm",
            f"{name} learns from labelled examples, but the data set's tasks are acted in; "
            f"use algorithm=rl2, random, ucb1, thompson, gittins or psrl (or maml, metasgd "
            f"or anil on point_nav)",
        )
    acts_only = hasattr(learner, "policy") and not hasattr(learner, "predict")
    if not getattr(data, "acts", False) and acts_only:
        raise ConfigError(
            "algorithm",
            f"{name} acts in tasks (dataset=bandit, tabular_mdp or point_nav), but the data "
            f"set poses labelled episodes",
        )


def check_episode_shapes(cfg: DictConfig) -> None:
    """A learner built for one episode shape cannot take variable ones (``dataset.variable``):
    say so before any data is loaded."""
    learner = target_of(cfg, "algorithm")
    if cfg.dataset.get("variable") and not getattr(learner, "variable_episodes", True):
        raise ConfigError(
            "algorithm",
            f"{learner.__name__} is built for one N-way K-shot episode shape, but "
            f"dataset.variable draws episodes of varying shape; set dataset.variable=false or "
            f"use another learner",
        )


def check_objective(direction: str, task: TaskSpec) -> None:
    """A sweeper's direction must match the returned validation metric."""
    wanted = "maximize" if task.higher_is_better else "minimize"
    if direction != wanted:
        raise ConfigError(
            "hydra.sweeper.direction",
            f"is {direction}, but this data set's validation {task.metric} is "
            f"{'higher' if task.higher_is_better else 'lower'}-is-better; use {wanted}",
        )


def record_failure(run_dir: Path, message: str) -> None:
    """A failed sweep member says so in its ``summary.json``, where reports look, unless the
    directory holds a complete run (e.g. the sweep was re-run with other overrides): that
    result is kept."""
    path = run_dir / "summary.json"
    if read_complete_summary(path) is not None:
        return
    summary = {"status": "failed", "error": message, "run_dir": str(run_dir)}
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")


def config_hash(resolved: dict[str, Any]) -> str:
    content = {k: v for k, v in resolved.items() if k != "resume"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Start:
    """Where a run starts: the checkpoint it continues (None: fresh), the summary of a
    complete run (None: there is work to do) and its W&B run id. Decided on rank 0."""

    resumed: dict[str, Any] | None
    done: dict[str, Any] | None
    run_id: str


def starting_point(
    cfg: DictConfig, checkpoints: Checkpoints, context: RunContext, resolved: dict[str, Any]
) -> Start:
    run_dir = context.run_dir
    resumed = resume_from(cfg.resume, checkpoints, run_dir, context.sweep_member)
    if resumed is not None and context.sweep_member:
        check_same_member(resumed, resolved, run_dir)
    done = read_complete_summary(run_dir / "summary.json") if resumed is not None else None
    if done and resumed["step"] < cfg.trainer.max_steps:  # asked to train further
        done = None
    return Start(resumed, done, stable_run_id(run_dir, resumed))


def make_logger(
    cfg: DictConfig, runtime: Runtime, start: Start, context: RunContext, resolved: dict
) -> Logger:
    """metrics.jsonl, figures/ and the configured tracker on rank 0; nothing on the other
    ranks."""
    if not runtime.is_main:
        return NullLogger()
    identity = RunIdentity(start.run_id, context.name, context.group, context.job_type)
    return LoggerGroup(
        [
            MetricsFile(
                context.run_dir / "metrics.jsonl",
                start.resumed["step"] if start.resumed else None,
            ),
            FigureFiles(context.run_dir / "figures"),
            build(cfg, "logger")(
                identity=identity,
                run_dir=context.run_dir,
                config={**resolved, "swept": swept_values(context.overrides)},
            ),
        ]
    )


def task_sets(
    cfg: DictConfig, data: Any, learner: Any, runtime: Runtime
) -> tuple[TaskSampler, FixedEpisodes, FixedEpisodes]:
    """The training sampler and the fixed validation and test sets (from ``eval.seed`` and
    ``eval.seed + 1``), on the run's device: image episodes in the learner's training shape,
    or trials of a task family (every split the same distribution)."""
    val = fixed_episodes(cfg, data, "val", cfg.eval.val_episodes, runtime)
    test = fixed_episodes(cfg, data, "test", cfg.eval.test_episodes, runtime)
    if isinstance(data, TrialData):
        return data.sampler("train").to(runtime.device), val, test
    evaluation = data.episodes
    train_spec = learner.training_episodes(evaluation)
    keys = training_keys(train_spec, evaluation)
    return placed_sampler(data, "train", train_spec, runtime, keys), val, test


# The seed of each split's fixed episodes, from eval.seed: the same for every algorithm and
# training seed, so that runs are compared on the same episodes.
EVALUATION_SEED_OFFSET = {"val": 0, "test": 1, "train": 2}


def fixed_episodes(
    cfg: DictConfig, data: Any, split: str, count: int, runtime: Runtime
) -> FixedEpisodes:
    """``count`` fixed episodes of ``split`` in the data set's evaluation shape (or trials),
    drawn from ``eval.seed`` plus the split's offset, on the run's device."""
    seed = cfg.eval.seed + EVALUATION_SEED_OFFSET[split]
    if isinstance(data, TrialData):
        return FixedEpisodes(data.sampler(split).to(runtime.device), count, seed)
    return FixedEpisodes(placed_sampler(data, split, data.episodes, runtime), count, seed)


def placed_sampler(
    data: Any,
    split: str,
    spec: EpisodeSpec,
    runtime: Runtime,
    keys: tuple[str, str, str] | None = None,
) -> TaskSampler:
    """A split's sampler on the run's device (image data sets choose device or pinned host
    memory); ``keys``: the config keys behind ``spec``, for its errors."""
    sampler = data.sampler(split, spec, keys) if keys else data.sampler(split, spec)
    if hasattr(data, "place"):
        return data.place(sampler, runtime.device)
    return sampler.to(runtime.device)


def validation_rows(
    cfg: DictConfig, episodes: FixedEpisodes, task: TaskSpec, run_dir: Path
) -> Callable[[EvalResult, int], None] | None:
    """With ``eval.val_episode_rows``: each validation's rows as ``val_episodes/step_<N>.csv``
    (one file per validation, so a resumed run rewrites, never appends)."""
    if not cfg.eval.get("val_episode_rows"):
        return None

    def write(result: EvalResult, step: int) -> None:
        rows = episode_table(episodes, result.per_episode, task, cfg.eval.batch_size)
        rows.write(run_dir / "val_episodes" / f"step_{step:07d}.csv")

    return write


def overfit_sets(
    cfg: DictConfig, sampler: TaskSampler, val: FixedEpisodes, is_main: bool
) -> tuple[TaskSampler, FixedEpisodes]:
    """``debug.overfit_episodes: N`` (``debug=overfit``): train on N training episodes drawn
    once from ``seed`` and validate on those very episodes, a learner's first sanity check. The
    test set stays the real one, so the summary shows the gap. Otherwise the sets as given."""
    count = (cfg.get("debug") or {}).get("overfit_episodes")
    if count is None:
        return sampler, val
    fixed = FixedTrainingEpisodes(sampler, count, cfg.seed)
    if is_main:
        log.info(
            "overfitting %d fixed training episodes: validated on them, tested as usual", count
        )
    return fixed, FixedEpisodes(fixed, count, cfg.eval.seed)


def start_encoder(
    cfg: DictConfig,
    learner: Any,
    source: PretrainedSource | None,
    resumed: dict[str, Any] | None,
    is_main: bool,
) -> dict[str, Any] | None:
    """Load and freeze the pretrained encoder as ``pretrained`` asks; the source's record
    (kept from the checkpoint when resuming)."""
    if source is not None:
        copied = load_encoder(learner, source)
        if is_main:
            log.info("encoder from %s (%d tensors)", source.path, copied)
    if (cfg.get("pretrained") or {}).get("freeze"):
        frozen = freeze_encoder(learner)
        if is_main:
            log.info("encoder frozen (%d parameters)", frozen)
    if source is not None:
        return source.record()
    return resumed.get("pretrained") if resumed else None


def run(cfg: DictConfig, context: RunContext) -> float | None:
    """Train, validate and test one configuration; returns the best validation score (the
    objective a sweeper such as Optuna optimises)."""
    check_pairing(cfg)  # before resolving: another family's keys may not interpolate
    check_episode_shapes(cfg)
    run_dir = context.run_dir
    checkpoints = Checkpoints(run_dir / "checkpoints")
    summary_path = run_dir / "summary.json"
    resolved = OmegaConf.to_container(cfg, resolve=True)
    runtime = build(cfg, "hardware").setup()
    start = runtime.decide_on_main(lambda: starting_point(cfg, checkpoints, context, resolved))
    resumed, done = start.resumed, start.done
    if done:
        result = EvalResult(**done["test"])
        if runtime.is_main:
            log.info("%s is complete; nothing to do", run_dir)
            for line in (result.line("test"), *result.source_lines("test")):
                log.info(line)
        return done["best_val"]["score"]

    check_evaluation(cfg)
    check_shapes(resolved)  # before any data loads: shapes, then every group's types
    check_config(cfg)
    check_pretrained(cfg)
    source = read_source(cfg) if resumed is None else None  # a resumed run has its weights
    torch.manual_seed(cfg.seed)
    with runtime.main_first():  # one process downloads and caches the data
        data = build(cfg, "dataset")
    learner = build(cfg, "algorithm", model=build(cfg, "model"), task=data.task)
    if isinstance(learner, ClassSupervised):
        learner.set_training_classes(data.class_count("train"))
    pretrained = start_encoder(cfg, learner, source, resumed, runtime.is_main)
    runtime.place(learner)
    sampler, val_episodes, test_episodes = task_sets(cfg, data, learner, runtime)
    sampler, val_episodes = overfit_sets(cfg, sampler, val_episodes, runtime.is_main)

    check_learning_rate(cfg)
    trains = any(p.requires_grad for p in learner.parameters())
    optimizers = build_optimisers(cfg, learner) if trains else None
    if not trains and runtime.is_main:
        name = getattr(learner, "name", type(learner).__name__)
        log.info("%s has nothing to train: validated and tested as it is", name)

    run_id = start.run_id
    logger = make_logger(cfg, runtime, start, context, resolved)
    trainer = Trainer(
        learner=learner,
        optimizer=optimizers,
        scheduler=None,
        sampler=sampler,
        val_episodes=val_episodes,
        task=data.task,
        runtime=runtime,
        generator=torch.Generator().manual_seed(cfg.seed),
        seed=cfg.seed,
        checkpoints=checkpoints,
        logger=logger,
        reporter=make_reporter() if runtime.is_main else NullReporter(),
        config=TrainerConfig(**cfg.trainer),
        eval_batch_size=cfg.eval.batch_size,
        on_validation=validation_rows(cfg, val_episodes, data.task, run_dir),
        run_state={
            "config": resolved,
            "overrides": list(context.overrides),
            "wandb_run_id": run_id,
            "data": data.state_dict() if hasattr(data, "state_dict") else {},
            **({"pretrained": pretrained} if pretrained else {}),
        },
    )
    if resumed is not None:
        if runtime.is_main:
            warn_about_changes(resumed["config"], resolved)
        trainer.load_state_dict(resumed)

    exit_code, stopped = 1, None
    stop_signals = StopSignals()
    try:
        with stop_signals:
            trainer.fit(stop_signals)
        best = runtime.decide_on_main(lambda: load_checkpoint(checkpoints.best)["learner"])
        learner.load_state_dict(best)
        result = evaluate(learner, test_episodes, data.task, runtime, cfg.eval.batch_size)
        logger.log(result.metrics("test"), trainer.step)
        illustrate(learner, test_episodes, runtime, logger, trainer.step, "test", result)
        if runtime.is_main:
            rows = episode_table(test_episodes, result.per_episode, data.task, cfg.eval.batch_size)
            rows.write(run_dir / EPISODES_CSV)
            logger.table("test/episodes", rows.columns, rows.rows, trainer.step)
            inference = inference_kind(learner, test_episodes, data.task, runtime.device)
            summary = write_summary(
                summary_path, result, trainer, runtime, context, resolved, inference
            )
            logger.summary(summary_metrics(summary))
            logger.checkpoint(checkpoints.best, summary_metrics(summary))  # log_checkpoints
        exit_code = 0
    except Preempted as error:
        log.warning("%s; %s holds it and the run continues from there", error, checkpoints.last)
        stopped, exit_code = error, error.exit_code
        logger.preempting()
    finally:
        logger.finish(exit_code)
    if stopped is not None:
        stop_signals.hand_over()  # in a submitit job: checkpoint the job, requeue it, exit
        raise stopped
    if runtime.is_main:
        for line in (result.line("test"), *result.source_lines("test")):
            log.info(line)
    return trainer.best_score


def write_summary(
    path: Path,
    result: EvalResult,
    trainer: Trainer,
    runtime: Runtime,
    context: RunContext,
    resolved: dict[str, Any],
    inference: str | None = None,
) -> dict[str, Any]:
    """``summary.json``: the test result and what produced it (rank 0 writes it); the
    learner's ``inference`` (inductive or transductive, ``training/inference.py``)."""
    summary = {
        "status": "complete",
        "test": result.as_dict(),
        "best_val": {
            "metric": result.metric,
            "score": trainer.best_score,
            "step": trainer.best_step,
        },
        "steps": trainer.step,
        "train_seconds": round(trainer.train_seconds, 3),
        "episodes_per_s": round(trainer.episodes_per_second, 3),
        "device": str(runtime.device),
        "processes": runtime.world_size,
        "run_dir": str(context.run_dir),
        "wandb_run_id": trainer.run_state["wandb_run_id"],
        "wandb_group": context.group,
        "episodes_csv": EPISODES_CSV,
        "config_hash": config_hash(resolved),
        "git": git_state(),
        "versions": package_versions(),
    }
    if inference is not None:
        summary["inference"] = inference
    if "pretrained" in trainer.run_state:
        summary["pretrained"] = trainer.run_state["pretrained"]
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return summary


def summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """What W&B's run summary shows: the test result and how fast the run trained."""
    test, best = summary["test"], summary["best_val"]
    return {
        f"test/{test['metric']}": test["mean"],
        f"test/{test['metric']}_ci95": test["ci95"],
        "test/result": EvalResult(**test).line("test"),  # the mean with its CI, as printed
        "test/episodes": test["episodes"],
        **{f"test/{name}": value for name, value in test.get("extra", {}).items()},
        **{
            f"test/{name}/{field}": own[key]
            for name, own in test.get("sources", {}).items()
            for key, field in (
                ("mean", test["metric"]),
                ("ci95", f"{test['metric']}_ci95"),
                ("held_out", "held_out"),
            )
        },
        f"val/best_{best['metric']}": best["score"],
        "val/best_step": best["step"],
        "perf/episodes_per_s": summary["episodes_per_s"],
        "train_seconds": summary["train_seconds"],
    }
