"""Per-episode results: one row per fixed evaluation episode, for ``episodes.csv`` and W&B.

A mean and its interval say how well a learner did; the rows say on what. Two runs scored on
the same episodes (the same ``episode_id`` sequence) can be compared episode by episode
(``metarun-report``'s paired comparisons), which is far more sensitive than comparing two
means, and a surprising mean can be traced to the episodes behind it.

The columns, in order:

* ``episode``: the episode's index in its fixed set; ``seed``: the seed the set was drawn from
  (``eval.seed`` for validation, ``eval.seed + 1`` for test).
* ``episode_id``: 16 hex digits of a SHA-256 over what defines the episode: its plan row (the
  classes and the examples drawn, by index within the split, or a task's parameters) and the
  names of its classes. The same id means the same episode.
* ``source`` (multi-source episodes: the data set it came from), ``ways``, ``shots`` and
  ``queries`` (an integer, or per-way counts joined by ``;`` when they differ, as in variable
  episodes; empty where they do not apply), ``classes`` (the class names, way by way, joined
  by ``;``).
* ``score`` (the episode's accuracy, error or return), then any other per-episode measure
  (``regret`` for bandits).

The rows come from the fixed episodes' plan and the learner's per-episode scores alone, so a
resumed run, and ``metarun-eval`` with the same settings, write the same rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metarun.atomic import atomic_write_text
from metarun.data.episodes import EpisodeBatch, FixedEpisodes, one_at_a_time
from metarun.data.task import TaskSpec

COLUMNS = ("episode", "seed", "episode_id", "source", "ways", "shots", "queries", "classes")
EPISODES_CSV = "episodes.csv"


@dataclass(frozen=True)
class EpisodeTable:
    """The rows of one evaluation: ``columns`` and one list of cells per episode."""

    columns: list[str]
    rows: list[list[Any]]

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()

    def write(self, path: Path) -> None:
        """Written whole or not at all (``atomic_write_text``)."""
        atomic_write_text(path, self.csv())


def episode_table(
    episodes: FixedEpisodes,
    per_episode: dict[str, Tensor],
    task: TaskSpec,
    batch_size: int,
) -> EpisodeTable:
    """The rows of ``episodes`` scored as ``per_episode`` (``EvalResult.per_episode``)."""
    described = describe(episodes, task, batch_size)
    measures = list(per_episode)  # score first, then regret where there is one
    values = [per_episode[name].tolist() for name in measures]
    rows = [
        [*cells, *(column[index] for column in values)] for index, cells in enumerate(described)
    ]
    return EpisodeTable([*COLUMNS, *measures], rows)


def describe(episodes: FixedEpisodes, task: TaskSpec, batch_size: int) -> list[list[Any]]:
    """The descriptive cells (``COLUMNS``) of every episode, in order."""
    sampler = episodes.sampler
    names: dict[int, str] | None = getattr(sampler, "class_names", None)
    sources = episode_sources(episodes)
    split = getattr(sampler, "split", "")
    shapes: list[tuple[Any, Any, Any, list[int]]] = []
    if task.kind != "control":  # trials have no support and query sets to count
        for batch in episodes.batches(batch_size):
            for part in one_at_a_time(batch):
                shapes.extend(shape_of(part, task))
    rows = []
    for index, plan_row in enumerate(episodes.plan):
        ways, shots, queries, classes = shapes[index] if shapes else ("", "", "", [])
        named = [names.get(c, str(c)) if names else str(c) for c in classes]
        rows.append(
            [
                index,
                episodes.seed,
                episode_id(plan_row, named, split),
                sources[index] if sources else "",
                ways,
                shots,
                queries,
                ";".join(named),
            ]
        )
    return rows


def shape_of(batch: EpisodeBatch, task: TaskSpec) -> list[tuple[Any, Any, Any, list[int]]]:
    """``(ways, shots, queries, classes)`` of each episode of a batch."""
    if task.kind != "classification":  # regression: how many points, no ways or classes
        support, query = batch.support_x.shape[1], batch.query_x.shape[1]
        return [("", support, query, []) for _ in range(len(batch))]
    ways = batch.ways
    support = _counts(batch.support_y, ways)
    query = _counts(batch.query_y, ways)
    classes = batch.classes.tolist() if batch.classes is not None else [[]] * len(batch)
    return [
        (ways, _cell(support[b]), _cell(query[b]), classes[b][:ways]) for b in range(len(batch))
    ]


def _counts(labels: Tensor, ways: int) -> list[list[int]]:
    """Examples per way of each episode, ``[B][ways]``."""
    one_hot = torch.nn.functional.one_hot(labels.long().cpu(), ways)
    return one_hot.sum(dim=1).tolist()


def _cell(counts: Sequence[int]) -> int | str:
    """One number when every way has it, else the per-way counts."""
    return counts[0] if len(set(counts)) == 1 else ";".join(map(str, counts))


def episode_id(plan_row: Tensor, classes: Sequence[str], split: str = "") -> str:
    """16 hex digits naming an episode by its content (see the module docstring)."""
    digest = hashlib.sha256()
    row = plan_row.detach().cpu().contiguous()
    digest.update(f"{split}|{row.dtype}|{tuple(row.shape)}|".encode())
    digest.update(row.numpy().tobytes())
    digest.update(";".join(classes).encode())
    return digest.hexdigest()[:16]


def episode_sources(episodes: FixedEpisodes) -> list[str] | None:
    """Each episode's source name, for multi-source episodes; None otherwise."""
    sampler = episodes.sampler
    names = getattr(sampler, "source_names", None)
    if names is None:
        return None
    return [names[i] for i in sampler.source_of(episodes.plan).tolist()]  # type: ignore[attr-defined]
