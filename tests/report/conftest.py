"""Fixtures for the report: hand-written members for unit tests, and one real sweep per session.

``write_member`` writes the files a run leaves behind (``.hydra/overrides.yaml``,
``summary.json``, ``metrics.jsonl``, and ``episodes.csv`` when given scores) in the formats
``run.py`` and ``MetricsFile`` write them.
``finished_sweep`` is a real ``metarun -m`` over two learning rates and two seeds on the
Omniglot sample (a few ProtoNet steps each, about 20 seconds on two cores), made once and shared.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from cli_helpers import command


@pytest.fixture(scope="session")
def run_command():
    return command


def write_member(
    sweep: Path,
    number: int,
    overrides: Sequence[str],
    *,
    test: tuple[float, float] | None = None,
    metric: str = "acc",
    curve: Sequence[tuple[int, float]] = (),
    train_seconds: float = 10.0,
    steps: int | None = None,
    sources: dict[str, tuple[float, float, bool]] | None = None,
    inference: str | None = None,
    episodes: Sequence[float] | None = None,
    eval_seed: int = 0,
) -> Path:
    """A member dir; ``test=(mean, ci95)`` makes it complete, None leaves it without summary;
    ``sources``: a multi-source run's ``{name: (mean, ci95, held_out)}``; ``episodes``: the
    per-episode scores of ``episodes.csv``, on the episodes of ``eval_seed``."""
    member = sweep / str(number)
    (member / ".hydra").mkdir(parents=True)
    (member / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    last = steps if steps is not None else max((s for s, _ in curve), default=0)
    records = [{"step": s, "train/loss": 1.0} for s in range(1, last + 1)]
    best: tuple[int, float] | None = None  # the trainer logs the best score so far
    for step, value in curve:
        if best is None or (value > best[1] if metric == "acc" else value < best[1]):
            best = (step, value)
        records[step - 1].update(
            {f"val/{metric}": value, f"val/{metric}_ci95": 1.0, f"val/best_{metric}": best[1]}
        )
    (member / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if test is not None:
        best = best or (0, 0.0)
        summary = {
            "status": "complete",
            "test": {"metric": metric, "mean": test[0], "ci95": test[1], "episodes": 600},
            "best_val": {"metric": metric, "score": best[1], "step": best[0]},
            "steps": last,
            "train_seconds": train_seconds,
        }
        if sources:
            summary["test"]["sources"] = {
                name: {"mean": mean, "ci95": ci95, "episodes": 300, "held_out": held_out}
                for name, (mean, ci95, held_out) in sources.items()
            }
        if inference is not None:
            summary["inference"] = inference
        (member / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if episodes is not None:
        write_episodes(member, episodes, eval_seed)
    return member


EPISODES_HEADER = "episode,seed,episode_id,source,ways,shots,queries,classes,score"


def episode_id(eval_seed: int, index: int) -> str:
    """16 hex characters, the same for the same episode of the same eval.seed."""
    return hashlib.sha256(f"{eval_seed}/{index}".encode()).hexdigest()[:16]


def write_episodes(run_dir: Path, scores: Sequence[float], eval_seed: int = 0) -> Path:
    """``episodes.csv`` as runs write it: 5-way 1-shot, 15 queries, an extra ``regret``
    column that readers must ignore."""
    lines = [EPISODES_HEADER + ",regret"]
    for i, score in enumerate(scores):
        classes = ";".join(f"omniglot/Greek/character{c:02d}" for c in range(i % 3, i % 3 + 5))
        lines.append(f"{i},{eval_seed},{episode_id(eval_seed, i)},,5,1,15,{classes},{score!r},0")
    path = run_dir / "episodes.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def member_writer():
    """``member_writer(sweep_dir, 0, ["seed=0"], test=(50.0, 1.0), curve=[(2, 40.0)])``."""
    return write_member


CONSTANT = ["experiment=omniglot_sample", "logger=none"]


@pytest.fixture
def seed_sweep(tmp_path: Path) -> Path:
    """lr 0.001 x seeds 0-2 (complete), lr 0.01 x seeds 0-1 complete and seed 2 crashed."""
    tests = {
        ("0.001", 0): (90.0, 0.5),
        ("0.001", 1): (94.0, 0.6),
        ("0.001", 2): (95.0, 0.4),
        ("0.01", 0): (96.0, 0.5),
        ("0.01", 1): (97.0, 0.5),
        ("0.01", 2): None,
    }
    for number, ((lr, seed), test) in enumerate(tests.items()):
        write_member(
            tmp_path,
            number,
            [*CONSTANT, f"optimizer.lr={lr}", f"seed={seed}", "resume=true"],
            test=test,
            curve=[(2, 70.0 + number), (4, 80.0 + number)],
            train_seconds=10.0 * (number + 1),
        )
    return tmp_path


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_overrides) -> Path:
    """A real multirun dir: ``optimizer.lr=1e-3,2e-3 seed=0,1``, four complete members."""
    cwd = tmp_path_factory.mktemp("sweep")
    done = command(
        "metarun", "-m", "optimizer.lr=1e-3,2e-3", "seed=0,1", *tiny_overrides("protonet"), cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    (sweep,) = (cwd / "outputs" / "multirun").iterdir()
    return sweep
