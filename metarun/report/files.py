"""The report on disk: ``report.md`` for people, CSV files for scripts and spreadsheets.

``report.md`` holds the per-configuration table (when seeds were swept), then the per-member
table, then the plots. ``report.csv`` has one row per member and ``report_by_config.csv`` one
per configuration, at full precision and with empty cells for missing values. Every file is
written atomically, so a report being regenerated is never read half-written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from metarun.atomic import atomic_write_text
from metarun.report.display import (
    CONFIGS_NOTE,
    MEMBERS_NOTE,
    TextTable,
    config_table,
    header_lines,
    member_table,
)
from metarun.report.members import Member
from metarun.report.tables import Report

REPORT_MD = "report.md"
MEMBERS_CSV = "report.csv"
CONFIGS_CSV = "report_by_config.csv"


def markdown_table(table: TextTable) -> str:
    """A pipe table padded to line up, so the file reads well as plain text too."""
    cells = [table.headers, *table.rows]
    cells = [[c.replace("|", "\\|") for c in row] for row in cells]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.headers))]

    def line(row: list[str]) -> str:
        padded = [
            c.rjust(w) if i in table.right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [("-" * (w - 1) + ":") if i in table.right else "-" * w for i, w in enumerate(widths)]
    return "\n".join([line(cells[0]), "| " + " | ".join(rule) + " |", *map(line, cells[1:])])


def markdown(report: Report, plots: Sequence[Path] = ()) -> str:
    """The whole report as Markdown; without ``plots`` it is the terminal's plain text."""
    parts = [
        f"# Sweep report: {report.path.name}",
        "\n".join(f"- {x}" for x in header_lines(report)),
    ]
    if report.configs is not None:
        parts += ["## By configuration", markdown_table(config_table(report)), CONFIGS_NOTE]
    parts += ["## Members", markdown_table(member_table(report)), MEMBERS_NOTE]
    if plots:
        parts.append("## Validation curves")
        parts += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n\n".join(parts) + "\n"


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buffer.getvalue()


def members_csv(report: Report) -> str:
    header = [
        "member",
        *report.swept,
        "status",
        "metric",
        "test_mean",
        "test_ci95",
        "test_episodes",
        *(f"test_{name}_{part}" for name, _ in report.sources for part in ("mean", "ci95")),
        "best_val",
        "best_val_step",
        "steps",
        "train_seconds",
    ]
    rows = [
        [
            m.number,
            *((m.overrides or {}).get(k) for k in report.swept),
            m.status,
            m.metric,
            m.test_mean,
            m.test_ci95,
            m.test_episodes,
            *source_values(m, report.sources),
            m.best_val,
            m.best_step,
            m.steps,
            m.train_seconds,
        ]
        for m in report.members
    ]
    return _csv(header, rows)


def source_values(member: Member, sources: list[tuple[str, bool]]) -> list[float | None]:
    own = {(s.name, s.held_out): s for s in member.sources}
    return [
        getattr(own[key], part) if key in own else None
        for key in sources
        for part in ("mean", "ci95")
    ]


def configs_csv(report: Report) -> str:
    assert report.configs is not None, "only sweeps over seed have a configuration table"
    keys = report.config_keys
    header = [
        *keys,
        "seeds",
        "metric",
        "test_mean",
        "test_ci95",
        "test_std",
        "train_seconds_mean",
        "members",
        "incomplete_members",
    ]
    rows = []
    for row in report.configs:
        stats = row.stats
        rows.append(
            [
                *(row.values[k] for k in keys),
                len(row.complete),
                row.metric,
                stats.mean if stats else None,
                stats.ci95 if stats else None,
                stats.std if stats else None,
                row.train_seconds,
                " ".join(str(m.number) for m in row.complete),
                " ".join(str(m.number) for m in row.incomplete),
            ]
        )
    return _csv(header, rows)


def write_tables(report: Report, out_dir: Path, plots: Sequence[Path] = ()) -> list[Path]:
    """Write report.md, report.csv and (seeds swept) report_by_config.csv; return the paths."""
    written = [out_dir / REPORT_MD, out_dir / MEMBERS_CSV]
    atomic_write_text(written[0], markdown(report, plots))
    atomic_write_text(written[1], members_csv(report))
    if report.configs is not None:
        written.append(out_dir / CONFIGS_CSV)
        atomic_write_text(written[-1], configs_csv(report))
    return written
