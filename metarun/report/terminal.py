"""The report on the terminal, following ``tracking/console.py``: rich tables when stdout is a
terminal, plain text anywhere else (a pipe, a file, CI), where rich's boxes and colours would
only be noise. The plain text is the Markdown of ``report.md`` without the plots, so it reads
as text and pastes into an issue or a notebook as a table."""

from __future__ import annotations

import sys
import textwrap
from itertools import groupby
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from metarun.report.display import (
    COMPARISONS_NOTE,
    CONFIGS_NOTE,
    MEMBERS_NOTE,
    TextTable,
    comparison_lines,
    comparison_table,
    config_table,
    header_lines,
    member_table,
)
from metarun.report.files import PAIRED_TITLE, markdown
from metarun.report.tables import Report


def rich_table(table: TextTable, title: str, caption: str) -> Table:
    """Cells go in as ``Text``, so override values such as ``[40,40]`` are not read as markup."""
    shown = Table(
        title=title,
        caption=caption,
        caption_justify="left",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for i, header in enumerate(table.headers):
        # A number never wraps ("97.0 ±" over "0.5" misreads), so its header is folded to the
        # numbers' width instead; a setting folds rather than lose its end to an ellipsis.
        if i in table.right:
            width = max([len(row[i]) for row in table.rows] + [len(w) for w in header.split()])
            shown.add_column(Text(textwrap.fill(header, width)), justify="right", no_wrap=True)
        else:
            shown.add_column(Text(header), overflow="fold")
    for row, faint in zip(table.rows, table.faint, strict=True):
        shown.add_row(*(Text(cell) for cell in row), style="dim" if faint else None)
    return shown


def show(report: Report, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    if not stream.isatty():
        stream.write(markdown(report))
        return
    console = Console(file=stream)
    for line in header_lines(report):
        console.print(Text(line))
    if report.configs is not None:
        console.print(rich_table(config_table(report), "By configuration", CONFIGS_NOTE))
    console.print(rich_table(member_table(report), "Members", MEMBERS_NOTE))
    lines = comparison_lines(report)
    if lines or report.comparisons:
        console.print(Text(f"\n{PAIRED_TITLE}", style="bold"))
    for name, table in per_comparison(comparison_table(report)):
        console.print(rich_table(table, name, ""))
    if any(c.pairs for c in report.comparisons):
        console.print(Text(COMPARISONS_NOTE, style="dim italic"))
    for line in lines:
        console.print(Text(f"- {line}"))


def per_comparison(table: TextTable) -> list[tuple[str, TextTable]]:
    """The comparisons' table split into one per pair of configurations, titled "A vs B": a
    terminal has no room for that long first column beside the numbers."""
    right = frozenset(i - 1 for i in table.right if i > 0)
    split = []
    for name, rows in groupby(table.rows, key=lambda row: row[0]):
        kept = [row[1:] for row in rows]
        split.append((name, TextTable(table.headers[1:], kept, right, [False] * len(kept))))
    return split
