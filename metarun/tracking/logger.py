"""The logging seam: every metric sink (metrics.jsonl, W&B, nothing) has the same calls, so the
trainer never asks which ones are active."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml


@dataclass(frozen=True)
class RunIdentity:
    """How a run is named and grouped where runs are compared (W&B)."""

    run_id: str
    name: str
    group: str | None
    job_type: str


def swept_values(overrides: Sequence[str]) -> dict[str, Any]:
    """The command line's overrides as a flat mapping of typed values, ``{"algorithm": "maml",
    "algorithm.inner_lr": 0.4, "seed": 1}``: what a sweep varies, kept apart from the nested
    config so that W&B's parallel-coordinates and run-comparer views offer just these keys."""
    values: dict[str, Any] = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key.startswith("~"):
            continue
        try:
            values[key.lstrip("+")] = yaml.safe_load(value)
        except yaml.YAMLError:
            values[key.lstrip("+")] = value
    return values


class Logger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def image(self, name: str, png: bytes, step: int) -> None:
        """A picture of the run at ``step`` (PNG bytes): files in the run directory, W&B."""

    def checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        """Keep a checkpoint file with the run (W&B: a model artifact)."""

    def table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """Rows of a table at ``step``, e.g. every test episode's score (W&B: a Table)."""

    def preempting(self) -> None:
        """The job is being stopped to be continued later (a requeue), not failing."""

    def finish(self, exit_code: int = 0) -> None: ...


class LoggerGroup:
    """Fans every call out to several loggers."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def summary(self, values: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.summary(values)

    def image(self, name: str, png: bytes, step: int) -> None:
        for logger in self.loggers:
            logger.image(name, png, step)

    def checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.checkpoint(path, metadata)

    def table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        for logger in self.loggers:
            logger.table(name, columns, rows, step)

    def preempting(self) -> None:
        for logger in self.loggers:
            logger.preempting()

    def finish(self, exit_code: int = 0) -> None:
        for logger in self.loggers:
            logger.finish(exit_code)
