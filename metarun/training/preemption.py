"""Stopping cleanly when a scheduler asks: SLURM sends SIGTERM (preemption) or a user signal
(``--signal=USR1@120``; submitit uses SIGUSR2) some time before it kills a job.

A signal only sets a flag: the trainer finishes the step it is in, writes ``last.pt``
atomically and raises ``Preempted``, because saving from inside a signal handler could catch
the model halfway through an optimiser step. Whoever handled the signal before us (submitit's
requeue handler, in a submitit job) gets it afterwards, so the job is requeued and the requeued
job continues from ``last.pt`` in the same directory and the same W&B run.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Preempted(Exception):
    """Training stopped at a step boundary because a stop signal arrived; last.pt holds it."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum = signum
        self.step = step
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by this signal


class StopSignals:
    """While active, records the first stop signal instead of dying of it."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, Handler] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def hand_over(self) -> None:
        """Give the received signal to the handler that was installed before us when that was
        Python code (submitit's checkpoint-and-requeue, which exits). Default and ignore
        dispositions are left alone: ``Preempted`` already ends the run with the signal's exit
        code."""
        previous = self._previous.get(self.received) if self.received is not None else None
        if callable(previous):
            previous(self.received, None)
