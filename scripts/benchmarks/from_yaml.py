"""Learners as ``metarun`` builds them from their YAML, on random inputs shaped as a data set's
episodes: what ``family.py`` and ``learners.py`` both time.

Each learner is built as ``metarun`` builds it (Hydra ``compose`` of the shipped configs with
``algorithm=<name> model=conv4``, then ``metarun.run.build``), so the rows measure the paper
defaults a user runs. Two input shapes of random tensors, 5-way 1-shot: Omniglot
(``dataset=omniglot``, 1x28x28) and miniImageNet (``dataset=mini_imagenet``, 3x84x84,
``model.hidden_channels=32``, MAML's miniImageNet width); the episode is what the learner trains
on (``training_episodes`` of the data set's 5-way 1-shot 15-query; MAML: one query per class).
The meta-batch is the YAML's ``meta_batch_size``, capped at 32 tasks for Omniglot and 4 for
miniImageNet (MAML's miniImageNet meta-batch) to keep the run short on a CPU (``--max-tasks``
changes the cap). It needs nothing beyond the ``MetaLearner`` protocol, so a new learner is
benchmarked as soon as its YAML exists (``family_algorithms``: which names run, which wait).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection
from dataclasses import dataclass

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from timing import (
    MemoryProbe,
    add_common_arguments,
    batched_step,
    default_repeats,
    per_task_loop_step,
    prog,
    random_episodes,
    time_steps,
)
from torch import nn

from metarun.algorithms.base import ClassSupervised
from metarun.cli import CONFIG_DIR, options
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.hardware import Runtime
from metarun.run import build

QUICK_MAX_TASKS = 8


@dataclass(frozen=True)
class InputShape:
    """One input shape of the family rows: the data set whose episode settings apply, and the
    overrides that this shape (and nothing else) requires."""

    dataset: str  # a configs/dataset option: ways, shots, queries and image size
    image: tuple[int, int, int]
    overrides: tuple[str, ...]
    max_tasks: int  # meta-batch cap of a full run
    why: str
    train_classes: int  # the size of a class-supervised learner's pre-training head (Baseline)

    @property
    def name(self) -> str:
        return f"{self.dataset} {'x'.join(map(str, self.image))}"


SHAPES = {
    "omniglot": InputShape(
        "omniglot", (1, 28, 28), (), 32, "MAML's Omniglot meta-batch", 964 * 4
    ),  # background characters x 4 rotations
    "mini_imagenet": InputShape(
        "mini_imagenet",
        (3, 84, 84),
        ("model.hidden_channels=32",),  # Conv-4 with 32 filters, as MAML on miniImageNet
        4,
        "MAML's miniImageNet 1-shot meta-batch",
        64,
    ),
}


@dataclass(frozen=True)
class FamilyCase:
    """One learner built from its YAML, on one input shape, timed batched or per task."""

    algorithm: str  # a configs/algorithm option
    shape: str  # a key of SHAPES
    # "batched": one meta_loss over the meta-batch; "loop": one task at a time; "eval": predict
    # on a batch of evaluation episodes (--learners)
    variant: str
    overrides: tuple[str, ...] = ()  # beyond algorithm=<name>, the shape's and model=conv4
    max_tasks: int = 32

    @property
    def group(self) -> str:
        return " ".join((self.algorithm, *self.overrides))

    @property
    def label(self) -> str:
        return f"{SHAPES[self.shape].name}, {self.variant}"


def decode_case(text: str) -> FamilyCase:
    """A case from its JSON (``timing.encode_case``), as a child process receives it."""
    fields = json.loads(text)
    return FamilyCase(**{**fields, "overrides": tuple(fields["overrides"])})


def task_cap(full: int, max_tasks: int | None, quick: bool) -> int:
    """Episodes per timed call: ``--max-tasks`` if given, else a full run's, fewer if quick."""
    if max_tasks is not None:
        return max_tasks
    return min(full, QUICK_MAX_TASKS) if quick else full


def family_config(case: FamilyCase) -> DictConfig:
    """The config that ``metarun algorithm=<name> dataset=<shape> model=conv4 ...`` runs."""
    shape = SHAPES[case.shape]
    overrides = [
        f"algorithm={case.algorithm}",
        f"dataset={shape.dataset}",
        "model=conv4",
        *shape.overrides,
        *case.overrides,
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def build_family_learner(case: FamilyCase, device: str) -> tuple[nn.Module, EpisodeBatch]:
    """The learner as ``metarun.run`` builds and places it, and a meta-batch of random
    episodes shaped as it trains on them (``eval``: as the data set evaluates, a batch of
    ``eval.batch_size``)."""
    cfg = family_config(case)
    shape = SHAPES[case.shape]
    if cfg.dataset.image_size != shape.image[-1]:
        raise RuntimeError(f"dataset={shape.dataset} has image_size {cfg.dataset.image_size}")
    evaluation = EpisodeSpec(cfg.dataset.ways, cfg.dataset.shots, cfg.dataset.queries)
    torch.manual_seed(0)
    task = TaskSpec("classification", shape.image, evaluation.ways)
    learner = build(cfg, "algorithm", model=build(cfg, "model"), task=task)
    if isinstance(learner, ClassSupervised):
        learner.set_training_classes(shape.train_classes)
    Runtime(torch.device(device), None, channels_last="auto").place(learner)
    if case.variant == "eval":
        spec, tasks = evaluation, min(cfg.eval.batch_size, case.max_tasks)
    else:
        spec = learner.training_episodes(evaluation)
        tasks = min(learner.meta_batch_size, case.max_tasks)
    batch = random_episodes(
        tasks, spec.ways, spec.shots, spec.queries, device, shape.image, shape.train_classes
    )
    return learner.train(case.variant != "eval"), batch


@torch.no_grad()
def predict_step(learner: nn.Module, batch: EpisodeBatch) -> None:
    """Evaluation as ``metarun`` scores test episodes: ``predict`` in eval mode, no graph."""
    learner.predict(batch)


def run_family_case(case: FamilyCase, device: torch.device, repeats: int) -> dict[str, object]:
    """Time one case and measure its memory; ``tasks`` and ``episode`` say what it ran on."""
    learner, batch = build_family_learner(case, str(device))
    step_fn = {"batched": batched_step, "loop": per_task_loop_step, "eval": predict_step}[
        case.variant
    ]
    probe = MemoryProbe(device)
    probe.start()
    seconds = time_steps(lambda: step_fn(learner, batch), learner, repeats, device)
    return {
        "seconds": seconds,
        "peak_bytes": probe.peak_bytes(),
        "memory_method": probe.method,
        "tasks": len(batch),
        "episode": [
            batch.ways,
            batch.support_x.shape[1] // batch.ways,
            batch.query_x.shape[1] // batch.ways,
        ],
    }


def comma_list(requested: str, valid: Collection[str]) -> tuple[list[str], list[str]]:
    """The names of a comma-separated option, and those of them not in ``valid``."""
    names = [name.strip() for name in requested.split(",") if name.strip()]
    return names, [name for name in names if name not in valid]


def family_algorithms(
    requested: str | None, default: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """The algorithms to run and those of the default list skipped for want of a YAML."""
    available = options("algorithm")
    if requested is None:
        return [a for a in default if a in available], [a for a in default if a not in available]
    names, unknown = comma_list(requested, available)
    if unknown or not names:
        sys.exit(
            f"{prog()}: --algorithms: no configs/algorithm/<name>.yaml for "
            f"{', '.join(unknown) or 'an empty list'}; available: {', '.join(available)}"
        )
    return names, []


def family_shapes(requested: str) -> list[str]:
    names, unknown = comma_list(requested, SHAPES)
    if unknown or not names:
        sys.exit(
            f"{prog()}: --shapes: unknown {', '.join(unknown) or 'empty list'}; "
            f"valid: {', '.join(SHAPES)}"
        )
    return names


def parse_args(
    argv: list[str] | None,
    doc: str,
    algorithms: tuple[str, ...],
    shapes: str,
    full_repeats: int,
) -> argparse.Namespace:
    """The command line of a benchmark of learners from their YAML: which learners, which
    shapes (``shapes``: the default list's text), how many tasks."""
    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0])
    add_common_arguments(parser, f"timed steps per case ({full_repeats}; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="at most 8 tasks, 2 repeats")
    parser.add_argument(
        "--algorithms",
        default=None,
        help=f"configs/algorithm options, comma-separated (default: {','.join(algorithms)})",
    )
    parser.add_argument(
        "--shapes",
        default=None,
        help=f"input shapes, comma-separated, of {','.join(SHAPES)} (default: {shapes})",
    )
    parser.add_argument(
        "--max-tasks",
        type=int,
        default=None,
        help="tasks per meta-batch at most (default: 32 Omniglot, 4 miniImageNet)",
    )
    args = parser.parse_args(argv)
    default_repeats(parser, args, full_repeats)
    if args.max_tasks is not None and args.max_tasks < 1:
        parser.error("--max-tasks must be at least 1")
    return args


def print_skipped(skipped: list[str]) -> None:
    """The last header line: the default list's names that have no YAML yet."""
    if skipped:
        print(f"skipped, no configs/algorithm/<name>.yaml yet: {', '.join(skipped)}")
    print(flush=True)
