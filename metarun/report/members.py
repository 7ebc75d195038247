"""Reading a multirun directory: one ``Member`` per numbered job directory (``0/``, ``1/``, ...).

Everything comes from files a run writes itself (``.hydra/overrides.yaml``, ``summary.json``,
``metrics.jsonl``, ``episodes.csv``), so a report needs neither W&B nor the checkpoints, and it
works on a sweep that is still running or that crashed: a member without a complete summary is
kept and marked, never silently dropped, so a table cannot hide the runs that failed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from metarun.errors import MetarunError
from metarun.report.episodes import EpisodeScores, read_episodes
from metarun.resume import override_key
from metarun.tracking.metrics_file import read_metrics

COMPLETE = "complete"
INCOMPLETE = "incomplete"  # no summary.json yet: running, crashed or killed
UNREADABLE = "unreadable"  # a summary.json or overrides.yaml that cannot be parsed
VALID = (
    "give a directory written by `metarun -m`, such as outputs/multirun/<date>_<time>, "
    "that holds numbered member directories (0/, 1/, ...)"
)


class ReportError(MetarunError):
    """The path given is not a multirun directory the report can read."""


@dataclass(frozen=True)
class SourceResult:
    """One source's test result in a multi-source run (``summary.json``'s ``test.sources``)."""

    name: str
    mean: float
    ci95: float
    episodes: int
    held_out: bool


@dataclass(frozen=True)
class Member:
    """One job of a sweep, as its files describe it; test fields are None unless complete."""

    number: int
    path: Path
    overrides: dict[str, str] | None  # key -> value as on the command line; None if unknown
    status: str
    metric: str | None = None
    test_mean: float | None = None
    test_ci95: float | None = None
    test_episodes: int | None = None
    best_val: float | None = None
    best_step: int | None = None
    steps: int | None = None  # summary's steps, or the last step metrics.jsonl logged
    train_seconds: float | None = None
    curve: tuple[tuple[int, float], ...] = ()  # (step, validation score)
    sources: tuple[SourceResult, ...] = ()  # multi-source runs: the test result per source
    inference: str | None = None  # "transductive" or "inductive"; None: not recorded
    episodes: EpisodeScores | None = None  # per-episode test scores (complete members only)
    episodes_missing: str | None = None  # why a complete member has no episodes
    name: str | None = None  # a run directory's label when runs, not a sweep, are compared

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def label(self) -> str:
        """The member number in a sweep, the directory's label among separate runs."""
        return self.name or str(self.number)


def inference_of(members: tuple[Member, ...] | list[Member]) -> str:
    """What the complete members recorded (``transductive``, ``inductive``), ``mixed``, or
    ``unknown`` for runs from before summary.json said."""
    seen = {m.inference or "unknown" for m in members if m.complete}
    if len(seen) > 1:
        return "mixed"
    return seen.pop() if seen else "unknown"


@dataclass(frozen=True)
class Sweep:
    path: Path
    members: list[Member]
    optuna: dict[str, Any] | None = None  # best_params and best_value, for Optuna sweeps
    runs: bool = False  # separate run directories given one by one, not one multirun directory


def is_member_dir(path: Path) -> bool:
    return path.is_dir() and path.name.isascii() and path.name.isdigit()


def member_dirs(sweep_dir: Path) -> list[Path]:
    """Numbered child directories in numeric order (``10/`` after ``9/``); anything else that
    shares the directory (``multirun.yaml``, a report, W&B files) is ignored."""
    return sorted((p for p in sweep_dir.iterdir() if is_member_dir(p)), key=lambda p: int(p.name))


def collect_sweep(sweep_dir: Path) -> Sweep:
    """Every member of ``sweep_dir``; a ``ReportError`` naming the path if it is not a sweep."""
    if not sweep_dir.exists():
        raise ReportError(f"{sweep_dir} does not exist; {VALID}")
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir} is not a directory; {VALID}")
    dirs = member_dirs(sweep_dir)
    if not dirs:
        raise ReportError(_why_not_a_sweep(sweep_dir))
    return Sweep(sweep_dir, [read_member(d) for d in dirs], read_optuna_results(sweep_dir))


RUNS_VALID = "give run directories (each with a summary.json), or a single sweep directory"


def collect_runs(run_dirs: list[Path]) -> Sweep:
    """Separate run (or evaluation) directories as one-member configurations, numbered in the
    order given and labelled by their directory names (by enough of their paths when names
    repeat); the report sits in their common parent."""
    for path in run_dirs:
        if not path.is_dir():
            raise ReportError(f"{path} is not a directory; {RUNS_VALID}")
        if member_dirs(path):
            raise ReportError(f"{path} is a sweep; {RUNS_VALID}, not both")
    resolved = [p.resolve() for p in run_dirs]
    if len(set(resolved)) < len(resolved):
        raise ReportError(f"a run directory is given twice; {RUNS_VALID}")
    labels = run_labels(resolved)
    members = [read_member(p, i, labels[i]) for i, p in enumerate(resolved)]
    parent = Path(os.path.commonpath(resolved))
    return Sweep(parent if parent not in resolved else parent.parent, members, runs=True)


def run_labels(paths: list[Path]) -> list[str]:
    """The shortest path ends that tell the directories apart: ``a``, ``b``, or ``x/eval``,
    ``y/eval`` when the names repeat."""
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def _why_not_a_sweep(path: Path) -> str:
    if (path / "summary.json").is_file() or (path / ".hydra").is_dir():
        return f"{path} is a single run, not a sweep; {VALID}"
    sweeps = sorted(p for p in path.iterdir() if p.is_dir() and member_dirs(p))
    if sweeps:
        return f"{path} holds sweeps, not members; give one of them, e.g. {sweeps[-1]}"
    return f"{path} holds no member directories; {VALID}"


def parse_overrides(lines: list[Any]) -> dict[str, str]:
    """``["optimizer.lr=0.001", "+x=1", "~y"]`` -> ``{"optimizer.lr": "0.001", "x": "1",
    "y": "~"}``; values stay the strings the command line gave."""
    parsed = {}
    for line in lines:
        text = str(line)
        parsed[override_key(text)] = text.split("=", 1)[1] if "=" in text else "~"
    return parsed


def read_member(path: Path, number: int | None = None, name: str | None = None) -> Member:
    """The member in ``path``; ``number`` defaults to the directory's name (``3/``)."""
    number = int(path.name) if number is None else number
    overrides = _read_overrides(path / ".hydra" / "overrides.yaml")
    records = _read_records(path / "metrics.jsonl")
    summary = _read_summary(path / "summary.json")
    last_step = max((r["step"] for r in records if isinstance(r.get("step"), int)), default=None)
    if summary is None or summary.get("status") != COMPLETE:
        metric = _metric_in(records)
        status = INCOMPLETE if summary is None else str(summary.get("status", UNREADABLE))
        curve = _curve(records, metric)
        best_val, best_step = _best_so_far(records, metric, curve)
        return Member(
            number,
            path,
            overrides,
            status,
            metric,
            best_val=best_val,
            best_step=best_step,
            steps=last_step,
            curve=curve,
            name=name,
        )
    try:
        test, best = summary["test"], summary.get("best_val") or {}
        metric = str(test["metric"])
        inference = summary.get("inference")
        episodes, missing = read_episodes(path, metric)
        return Member(
            number=number,
            path=path,
            overrides=overrides,
            status=COMPLETE,
            metric=metric,
            test_mean=float(test["mean"]),
            test_ci95=float(test["ci95"]),
            test_episodes=int(test["episodes"]),
            best_val=_float_or_none(best.get("score")),
            best_step=best.get("step"),
            steps=summary.get("steps", last_step),
            train_seconds=_float_or_none(summary.get("train_seconds")),
            curve=_curve(records, metric),
            sources=tuple(
                SourceResult(
                    source,
                    float(own["mean"]),
                    float(own["ci95"]),
                    int(own["episodes"]),
                    bool(own["held_out"]),
                )
                for source, own in (test.get("sources") or {}).items()
            ),
            inference=str(inference) if inference is not None else None,
            episodes=episodes,
            episodes_missing=missing,
            name=name,
        )
    except (KeyError, TypeError, ValueError):
        return Member(number, path, overrides, UNREADABLE, steps=last_step, name=name)


def _read_overrides(path: Path) -> dict[str, str] | None:
    """None when missing or unreadable: the member is still a row, but in no configuration."""
    try:
        lines = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return parse_overrides(lines) if isinstance(lines, list) else None


def _read_summary(path: Path) -> dict[str, Any] | None:
    """The summary, ``{"status": "unreadable"}`` for a corrupt one, None when missing."""
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"status": UNREADABLE}
    return summary if isinstance(summary, dict) else {"status": UNREADABLE}


def _read_records(path: Path) -> list[dict[str, Any]]:
    try:
        return [r for r in read_metrics(path) if isinstance(r, dict)]
    except (OSError, UnicodeDecodeError):
        return []


def _metric_in(records: list[dict[str, Any]]) -> str | None:
    """The validation metric a run logged (``val/acc``, ``val/mse``), for runs with no summary."""
    for record in records:
        for key in record:
            name = key.removeprefix("val/")
            if key.startswith("val/") and not name.startswith("best_") and "_ci95" not in name:
                return name
    return None


def _curve(records: list[dict[str, Any]], metric: str | None) -> tuple[tuple[int, float], ...]:
    """(step, score) of every validation, in step order; NaN was logged as null and is left out."""
    if metric is None:
        return ()
    points = {}
    for record in records:
        value, step = record.get(f"val/{metric}"), record.get("step")
        if isinstance(step, int) and isinstance(value, int | float):
            points[step] = float(value)
    return tuple(sorted(points.items()))


def _best_so_far(
    records: list[dict[str, Any]], metric: str | None, curve: tuple[tuple[int, float], ...]
) -> tuple[float | None, int | None]:
    """The best validation score an unfinished run has logged (``val/best_<metric>``, which the
    trainer keeps in the task's direction) and the first step that scored it."""
    if metric is None:
        return None, None
    logged = [r[f"val/best_{metric}"] for r in records if f"val/best_{metric}" in r]
    best = _float_or_none(logged[-1]) if logged else None
    step = next((s for s, value in curve if value == best), None)
    return best, step


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def read_optuna_results(sweep_dir: Path) -> dict[str, Any] | None:
    """Optuna's ``optimization_results.yaml`` (hydra-optuna-sweeper), single objective only."""
    try:
        results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(results, dict) or not isinstance(results.get("best_params"), dict):
        return None
    return {"best_params": results["best_params"], "best_value": results.get("best_value")}
