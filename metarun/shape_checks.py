"""Episode and trial shapes from the config alone, checked before any data loads.

An image data set reads its files (or renders kanji, a minute the first time) before a sampler
can say that ``dataset.shots=0`` cannot work; a 1-way episode would even train and report 100%.
What needs no data is checked here, from the resolved config, by ``run.run`` before the data set
is built and by ``cli.preflight`` before Hydra starts a run or a sweep. What needs the data (more
ways than a split has classes, more shots and queries than its smallest class has images) stays
with the samplers (``metarun.data.episodes.check_episode_fits``).
"""

from __future__ import annotations

from typing import Any

from metarun.data.variable_shape import VariableShape
from metarun.errors import ConfigError

# The least each shape setting of a data set may be, where the data set has it. One way, one
# arm or one action leaves nothing to choose: every learner is always right.
DATASET_LEAST = {
    "ways": 2,  # image episodes (and multi-source ones of fixed shape)
    "shots": 1,  # image and regression episodes
    "queries": 1,
    "arms": 2,  # bandit
    "pulls": 1,
    "states": 1,  # tabular_mdp
    "actions": 2,
    "horizon": 1,  # tabular_mdp, point_nav
    "episodes": 1,
    "rollouts": 1,  # point_nav
}
# A learner's own training shape (null: the data set's), at any depth of the algorithm's
# config (MetaGAN keeps its hosts' under algorithm.maml and algorithm.protonet).
TRAINING_LEAST = {"train_ways": 2, "train_shots": 1, "train_queries": 1}


def check_shapes(resolved: dict[str, Any]) -> None:
    """Refuse, naming the key, any shape setting that cannot give a meaningful episode."""
    dataset = resolved.get("dataset") or {}
    for name, least in DATASET_LEAST.items():
        if name in dataset:
            check_count(f"dataset.{name}", dataset[name], least)
    for key, value in training_settings(resolved.get("algorithm") or {}, "algorithm"):
        if value is not None:
            check_count(key, value, TRAINING_LEAST[key.rsplit(".", 1)[-1]])
    if dataset.get("variable") not in (None, False):
        VariableShape.of(dataset["variable"])  # its caps, e.g. min_ways of at least 2
    drawings = dataset.get("drawings")  # kanji: known before rendering
    if drawings is not None:
        check_count("dataset.drawings", drawings, 1)
    if isinstance(drawings, int) and not dataset.get("variable"):
        shots, queries = dataset.get("shots"), dataset.get("queries")
        if isinstance(shots, int) and isinstance(queries, int) and shots + queries > drawings:
            raise ConfigError(
                "dataset.shots + dataset.queries",
                f"{shots} + {queries} images per class exceed the {drawings} drawings of each "
                f"character (dataset.drawings); use at most {drawings} in total",
            )
    overfit = (resolved.get("debug") or {}).get("overfit_episodes")
    if overfit is not None:
        check_count("debug.overfit_episodes", overfit, 1)


def training_settings(node: dict[str, Any], key: str) -> list[tuple[str, Any]]:
    """``(key, value)`` of every ``train_ways``/``train_shots``/``train_queries`` in ``node``."""
    found = []
    for name, value in node.items():
        if name in TRAINING_LEAST:
            found.append((f"{key}.{name}", value))
        elif isinstance(value, dict):
            found.extend(training_settings(value, f"{key}.{name}"))
    return found


def check_count(key: str, value: Any, least: int) -> None:
    """``value`` must be an integer of at least ``least``; for a choice of one the message says
    why it measures nothing."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer of at least {least}, got {value!r}")
    if value < least:
        name = key.rsplit(".", 1)[-1]
        why = ""
        if value == 1 and name.endswith("ways"):
            why = " (a 1-way episode is always right)"
        elif value == 1:
            why = f" (one {name.removesuffix('s')} leaves nothing to choose)"
        raise ConfigError(key, f"must be at least {least}{why}, got {value}")


__all__ = ["check_count", "check_shapes"]
