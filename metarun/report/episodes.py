"""Reading a run's ``episodes.csv``: its score on every test episode, with the episode's id.

Every learner is tested on the same fixed episodes (drawn from ``eval.seed``), so two runs can
be compared episode by episode, but only if the ids say they really saw the same episodes. A
file that is missing or cannot be trusted gives no scores and a reason, which the report shows
rather than pairing on a guess. Columns other than ``episode``, ``seed``, ``episode_id`` and
``score`` are not needed here and are ignored.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

EPISODES_CSV = "episodes.csv"
REQUIRED = ("episode", "episode_id", "score")
NOT_RECORDED = f"has no {EPISODES_CSV} (run before metarun recorded episodes)"


@dataclass(frozen=True)
class EpisodeScores:
    """One run's test scores in episode order, as the file holds them (accuracy in percent, as
    ``summary.json``)."""

    ids: tuple[str, ...]
    scores: tuple[float, ...]
    eval_seeds: tuple[str, ...]  # the distinct ``seed`` values: the eval.seed the plan came from

    def __len__(self) -> int:
        return len(self.ids)


def read_episodes(
    run_dir: Path, metric: str | None = None
) -> tuple[EpisodeScores | None, str | None]:
    """(scores, None), or (None, why not) phrased to follow the run's name in a sentence."""
    path = run_dir / EPISODES_CSV
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
            fields = rows[0].keys() if rows else ()
    except FileNotFoundError:
        return None, NOT_RECORDED
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        return None, f"has an unreadable {EPISODES_CSV} ({error})"
    if not rows:
        return None, f"has an {EPISODES_CSV} without episodes"
    missing = [c for c in REQUIRED if c not in fields]
    if missing:
        return None, f"has an {EPISODES_CSV} without the column {', '.join(missing)}"
    try:
        order = [int(row["episode"]) for row in rows]
        scores = [float(row["score"]) for row in rows]
    except (TypeError, ValueError):
        return None, f"has an {EPISODES_CSV} with an episode or score that is not a number"
    if order != list(range(len(rows))):
        return None, f"has an {EPISODES_CSV} whose episodes are not 0, 1, 2, ... in order"
    bad = next((i for i, s in enumerate(scores) if not math.isfinite(s)), None)
    if bad is not None:
        return None, f"scored {scores[bad]} on episode {bad} ({EPISODES_CSV})"
    if metric == "acc" and not all(0.0 <= s <= 100.0 for s in scores):
        return None, f"has accuracies outside [0, 100] in {EPISODES_CSV} (percent expected)"
    seeds = tuple(dict.fromkeys(row.get("seed") or "" for row in rows))
    ids = tuple(row["episode_id"] or "" for row in rows)
    return EpisodeScores(ids, tuple(scores), tuple(s for s in seeds if s)), None


def mismatch(a_name: str, a: EpisodeScores, b_name: str, b: EpisodeScores) -> str | None:
    """None when ``a`` and ``b`` hold the same episodes in the same order, else one line on how
    they differ, for the report to say why the two are not paired."""
    if a.ids == b.ids:
        return None
    cause = "the data set or eval settings differ"
    if a.eval_seeds and b.eval_seeds and a.eval_seeds != b.eval_seeds:
        cause = f"eval.seed {'/'.join(a.eval_seeds)} vs {'/'.join(b.eval_seeds)}"
    if len(a) != len(b):
        return f"{a_name} was tested on {len(a)} episodes, {b_name} on {len(b)} ({cause})"
    if sorted(a.ids) == sorted(b.ids):
        return f"{a_name} and {b_name} were tested on the same episodes in another order"
    other = sum(x != y for x, y in zip(a.ids, b.ids, strict=True))
    return (
        f"{a_name} and {b_name} were tested on different episodes "
        f"({other} of {len(a)} ids differ; {cause})"
    )
