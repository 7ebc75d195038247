"""Every learner of the ``algorithm`` group, built small from its own YAML, for the tests that
check promises all of them keep (``tests/algorithms/test_every_learner.py``, and the
two-process run in ``tests/test_distributed.py``): a new learner is covered by its YAML."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir
from learner_helpers import image_batch
from omegaconf import DictConfig

from metarun.algorithms.base import ClassSupervised
from metarun.cli import CONFIG_DIR, options
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.run import build

TASK = TaskSpec("classification", (1, 28, 28), 3)
EVALUATION = EpisodeSpec(ways=3, shots=2, queries=2)
TRAINING_CLASSES = 12
# Every learner made small through the keys its YAML has (those it lacks are left alone): few
# ways and inner steps, and inner mini-batches smaller than the support set, so that the order
# of its examples matters.
SMALL = {
    "meta_batch_size": 4,
    "train_ways": 4,
    "train_queries": 2,
    "inner_steps": 2,
    "test_inner_steps": 2,
    "inner_batch_size": 2,
    "test_inner_batch_size": 2,
    "finetune_epochs": 3,
    "embedding_size": 16,
    "controller_size": 16,
    "memory_slots": 8,
    "filters": 8,
    "fce_steps": 2,
    "msl_anneal_steps": 2,
    "test_samples": 3,
    "set_channels": 8,
}
# The default backbone, and one that draws random numbers in every forward pass in training.
BACKBONES = {
    "default": ["model.hidden_channels=8"],
    "resnet12_dropblock": [
        "model=resnet12",
        "model.channels=[4,4,4,4]",
        "model.dropblock_rate=0.3",
        "model.dropblock_size=2",
    ],
}
ACTING = {"gittins", "psrl", "random", "rl2", "thompson", "ucb1"}
"""Learners of tasks you act in only: their promises are tested on trials (tests/envs,
tests/test_run_trials.py); ``test_the_acting_set_is_complete`` keeps this list honest."""
LEARNERS = [algorithm for algorithm in options("algorithm") if algorithm not in ACTING]
CASES = [(algorithm, backbone) for algorithm in LEARNERS for backbone in BACKBONES]


def small_learner(algorithm: str, backbone: str) -> torch.nn.Module | None:
    """The learner its YAML describes with the ``SMALL`` sizes, in float64; None where it
    refuses the backbone in one line naming ``model`` (Relation Networks compare feature maps,
    which ResNet-12 does not return)."""
    dataset = [f"dataset.{k}={getattr(EVALUATION, k)}" for k in ("ways", "shots", "queries")]
    cfg = small_config([f"algorithm={algorithm}", *dataset, *BACKBONES[backbone]], SMALL)
    try:
        learner = build_learner(cfg, TASK, TRAINING_CLASSES)
    except ConfigError as error:
        assert backbone != "default" and error.key == "model", error
        return None
    return learner.double()


def small_config(overrides: list[str], settings: dict) -> DictConfig:
    """The shipped config with ``overrides``, and each of ``settings`` applied where the
    algorithm's YAML has that key (the others are left as configured)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    for key, value in settings.items():
        if key in cfg.algorithm:
            cfg.algorithm[key] = value
    return cfg


def build_learner(cfg: DictConfig, task: TaskSpec, training_classes: int) -> torch.nn.Module:
    """The learner ``cfg`` describes for ``task``, from seed 0 as ``run.py`` builds it."""
    torch.manual_seed(0)
    learner = build(cfg, "algorithm", model=build(cfg, "model"), task=task)
    if isinstance(learner, ClassSupervised):
        learner.set_training_classes(training_classes)
    return learner


def shape(spec: EpisodeSpec) -> tuple[int, int, int]:
    return spec.ways, spec.shots, spec.queries


def with_classes(batch: EpisodeBatch, seed: int) -> EpisodeBatch:
    """Each way's class among ``TRAINING_CLASSES`` (what Baseline pre-trains on)."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.stack(
        [torch.randperm(TRAINING_CLASSES, generator=g)[: batch.ways] for _ in range(len(batch))]
    )
    return EpisodeBatch(**{**vars(batch), "classes": classes})


def training_batch(learner: torch.nn.Module, tasks: int = 4, seed: int = 1) -> EpisodeBatch:
    """Training episodes of the learner's shape, keyed as a run's first meta-step."""
    batch = image_batch(tasks, *shape(learner.training_episodes(EVALUATION)), size=28, seed=seed)
    return with_classes(batch, seed)


def evaluation_batch(tasks: int = 4, seed: int = 3) -> EpisodeBatch:
    """Evaluation episodes as ``FixedEpisodes`` gives them: no training keys."""
    batch = image_batch(tasks, *shape(EVALUATION), size=28, seed=seed)
    return EpisodeBatch(**{**vars(batch), "keys": None})


class SyntheticEpisodes:
    """A ``TaskSampler`` of random float64 images: a plan is one seed per episode, so any
    slice of it gathers the same episodes on any process."""

    def __init__(self, spec: EpisodeSpec) -> None:
        self.spec = spec

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(2**31, (count,), generator=generator)

    def gather(self, plan: torch.Tensor) -> EpisodeBatch:
        spec = self.spec
        episodes = [
            with_classes(image_batch(1, *shape(spec), size=28, seed=int(seed)), int(seed))
            for seed in plan
        ]
        parts = {
            name: torch.cat([getattr(e, name) for e in episodes])
            for name in ("support_x", "support_y", "query_x", "query_y", "classes")
        }
        return EpisodeBatch(**parts, ways=spec.ways)

    def to(self, device: torch.device | str) -> SyntheticEpisodes:
        return self
