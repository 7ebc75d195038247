"""What a person watching the run sees.

On a terminal, a rich progress bar with loss, score and episodes per second. Anywhere else (CI,
SLURM logs, a pipe) a rich bar would only print at the end, so plain log lines are written every
``log_every`` steps instead. Messages go through the ``metarun`` logger either way, so they also
land in the run's log file.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger("metarun")


class StdoutHandler(logging.StreamHandler):
    """A stream handler that looks ``sys.stdout`` up at every record, so log lines written
    while a rich bar is live go through rich's redirect and appear above the bar."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


class ConsoleFormatter(logging.Formatter):
    """Bare messages for information; warnings and errors say what they are."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def describe(metrics: dict[str, float]) -> str:
    parts = []
    for key, value in metrics.items():
        name = key.split("/", 1)[-1] if key.startswith("train/") else key
        name = name.replace("perf/", "")
        parts.append(f"{name} {value:.4g}")
    return "  ".join(parts)


class Reporter(Protocol):
    def start(self, total: int, completed: int) -> None: ...

    def update(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class NullReporter:
    """Shows nothing: the reporter of every process but rank 0 under ``hardware=ddp``."""

    def start(self, total: int, completed: int) -> None:
        pass

    def update(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class PlainReporter:
    """One log line per logged step: ``step 200/1000  loss 0.41  acc 87.2 ...``."""

    def __init__(self) -> None:
        self.total = 0
        self.started = 0.0
        self.first = 0

    def start(self, total: int, completed: int) -> None:
        self.total, self.first, self.started = total, completed, time.perf_counter()

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        elapsed = time.perf_counter() - self.started
        done = step - self.first
        eta = elapsed / done * (self.total - step) if done else 0.0
        log.info("step %d/%d  %s  eta %s", step, self.total, describe(metrics), _clock(eta))

    def close(self) -> None:
        pass


class RichReporter:
    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]meta-train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self.task = None

    def start(self, total: int, completed: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=completed, metrics="")

    def update(self, step: int, metrics: dict[str, float]) -> None:
        shown = {k: v for k, v in metrics.items() if not k.startswith("val/best")}
        if shown:
            self.progress.update(self.task, completed=step, metrics=describe(shown))
        else:
            self.progress.update(self.task, completed=step)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(stream: TextIO | None = None) -> Reporter:
    """A rich bar when ``stream`` (stdout by default) is a terminal, plain lines otherwise."""
    stream = stream or sys.stdout
    if stream.isatty():
        return RichReporter(Console(file=stream))
    return PlainReporter()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
