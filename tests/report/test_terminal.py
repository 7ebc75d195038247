from __future__ import annotations

import io

from metarun.report.files import markdown
from metarun.report.members import collect_sweep
from metarun.report.tables import build_report
from metarun.report.terminal import show


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_text_off_a_terminal_is_the_markdown_without_plots(seed_sweep) -> None:
    report = build_report(collect_sweep(seed_sweep))
    piped = io.StringIO()
    show(report, piped)
    assert piped.getvalue() == markdown(report)
    assert "\x1b[" not in piped.getvalue()  # no colour codes in a pipe


def test_rich_tables_on_a_terminal(seed_sweep, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    terminal = FakeTerminal()
    show(build_report(collect_sweep(seed_sweep)), terminal)
    text = terminal.getvalue()
    assert "By configuration" in text and "Members" in text
    assert text.index("By configuration") < text.index("Members")
    assert "96.5 ± 6.4" in text and "97.0 ± 0.5" in text
    assert "───" in text and "| 0.01" not in text  # a rich table, not the Markdown
    assert "\x1b[2m" in text  # the incomplete member is dimmed


def test_values_that_look_like_markup_are_shown_as_written(
    tmp_path, member_writer, monkeypatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    member_writer(tmp_path, 0, ["model.hidden=[40,40]"], test=(0.3, 0.01), metric="mse")
    member_writer(tmp_path, 1, ["model.hidden=[bold]"], test=(0.2, 0.01), metric="mse")
    terminal = FakeTerminal()
    show(build_report(collect_sweep(tmp_path)), terminal)
    assert "[40,40]" in terminal.getvalue() and "[bold]" in terminal.getvalue()
