from __future__ import annotations

import io
import logging

from metarun.tracking.console import (
    ConsoleFormatter,
    PlainReporter,
    RichReporter,
    StdoutHandler,
    make_reporter,
)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal(caplog) -> None:
    reporter = make_reporter(io.StringIO())
    assert isinstance(reporter, PlainReporter)
    with caplog.at_level(logging.INFO, logger="metarun"):
        reporter.start(total=100, completed=0)
        reporter.update(1, {})  # steps without metrics print nothing
        reporter.update(50, {"train/loss": 0.5, "train/acc": 81.25, "perf/episodes_per_s": 12.0})
        reporter.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("step 50/100  loss 0.5  acc 81.25  episodes_per_s 12  eta ")


def test_rich_bar_on_a_terminal() -> None:
    terminal = FakeTerminal()
    reporter = make_reporter(terminal)
    assert isinstance(reporter, RichReporter)
    reporter.start(total=10, completed=2)
    reporter.update(5, {"train/loss": 0.25})
    reporter.close()
    assert "meta-train" in terminal.getvalue() and "5/10" in terminal.getvalue()


def test_console_handler_follows_stdout_redirection(capsys) -> None:
    handler = StdoutHandler()
    handler.setFormatter(ConsoleFormatter())
    logger = logging.getLogger("metarun.test_console")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("careful")
        logger.error("broken")
    finally:
        logger.removeHandler(handler)
    assert capsys.readouterr().out == "warning: careful\nerror: broken\n"
