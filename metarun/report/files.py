"""The report on disk: ``report.md`` for people, CSV files for scripts and spreadsheets.

``report.md`` holds the per-configuration table (when seeds were swept), then the per-member
table, the paired comparisons, then the plots. ``report.csv`` has one row per member,
``report_by_config.csv`` one per configuration and ``comparisons.csv`` one per paired seed (and
one across seeds), at full precision and with empty cells for missing values. Every file is
written atomically, so a report being regenerated is never read half-written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from metarun.atomic import atomic_write_text
from metarun.report.comparisons import Comparison
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
    won_tied_lost,
)
from metarun.report.members import Member, inference_of
from metarun.report.tables import Report

REPORT_MD = "report.md"
MEMBERS_CSV = "report.csv"
CONFIGS_CSV = "report_by_config.csv"
COMPARISONS_CSV = "comparisons.csv"
PAIRED_TITLE = "Paired comparisons"


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
    title = "Run comparison" if report.runs else "Sweep report"
    parts = [
        f"# {title}: {report.path.name}",
        "\n".join(f"- {x}" for x in header_lines(report)),
    ]
    if report.configs is not None:
        parts += ["## By configuration", markdown_table(config_table(report)), CONFIGS_NOTE]
    parts += ["## Members", markdown_table(member_table(report)), MEMBERS_NOTE]
    parts += paired_section(report)
    curves = [p for p in plots if not p.name.startswith("paired_")]
    differences = [p for p in plots if p.name.startswith("paired_")]
    if curves:
        parts.append("## Validation curves")
        parts += [f"![{p.stem}]({p.name})" for p in curves]
    if differences:
        parts.append("## Paired differences per episode")
        parts += [f"![{p.stem}]({p.name})" for p in differences]
    return "\n\n".join(parts) + "\n"


def paired_section(report: Report) -> list[str]:
    """The comparisons' table, its note, and the lines on what was not paired (Markdown)."""
    lines = comparison_lines(report)
    if not report.comparisons and not lines:
        return []
    parts = [f"## {PAIRED_TITLE}"]
    if any(c.pairs for c in report.comparisons):
        parts += [markdown_table(comparison_table(report)), COMPARISONS_NOTE]
    if lines:
        parts.append("\n".join(f"- {line}" for line in lines))
    return parts


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buffer.getvalue()


def members_csv(report: Report) -> str:
    inference = ["inference"] if report.inference_known else []
    header = [
        "member",
        *report.swept,
        "status",
        *inference,
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
            m.label,
            *((m.overrides or {}).get(k) for k in report.swept),
            m.status,
            *([(m.inference or "unknown") if m.complete else None] if inference else []),
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
    inference = ["inference"] if report.inference_known else []
    header = [
        *keys,
        *inference,
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
                *([inference_of(row.members)] if inference else []),
                len(row.complete),
                row.metric,
                stats.mean if stats else None,
                stats.ci95 if stats else None,
                stats.std if stats else None,
                row.train_seconds,
                " ".join(m.label for m in row.complete),
                " ".join(m.label for m in row.incomplete),
            ]
        )
    return _csv(header, rows)


COMPARISON_COLUMNS = [
    "a",
    "b",
    "a_inference",
    "b_inference",
    "metric",
    "seed",
    "a_member",
    "b_member",
    "episodes",
    "mean_diff",
    "ci95",
    "t",
    "t_p",
    "wilcoxon",
    "wilcoxon_p",
    "nonzero",
    "a_won",
    "tied",
    "a_lost",
    "seeds",
    "seed_std",
    "note",
]


def _comparison_rows(comparison: Comparison) -> list[list[object]]:
    """A row per paired seed; ``seed=all`` across seeds; a row per refusal with its reason."""
    a, b, metric = comparison.a, comparison.b, comparison.metric
    sides = [a.label, b.label, a.inference, b.inference, metric]
    rows: list[list[object]] = []
    for pair in comparison.pairs:
        s = pair.stats
        rows.append(
            [
                *sides,
                pair.seed,
                pair.a.label,
                pair.b.label,
                s.n,
                s.mean,
                s.ci95,
                s.t,
                s.t_p,
                s.wilcoxon,
                s.wilcoxon_p,
                s.nonzero,
                *won_tied_lost(s, metric),
                None,
                None,
                s.note,
            ]
        )
    across = comparison.across
    if across is not None:
        note = "one seed: the seed variance is unknown" if across.n == 1 else None
        rows.append(
            [*sides, "all", None, None, comparison.episodes, across.mean, across.ci95]
            + [None] * 8
            + [across.n, across.std, note]
        )
    rows += [[*sides] + [None] * 16 + [why] for why in comparison.refused]
    assert all(len(row) == len(COMPARISON_COLUMNS) for row in rows)
    return rows


def comparisons_csv(report: Report) -> str:
    """Full precision; mean_diff and ci95 in the report's units (accuracy points)."""
    return _csv(COMPARISON_COLUMNS, [r for c in report.comparisons for r in _comparison_rows(c)])


def write_tables(report: Report, out_dir: Path, plots: Sequence[Path] = ()) -> list[Path]:
    """Write report.md, report.csv, report_by_config.csv (seeds swept) and comparisons.csv
    (configurations paired on their episodes); return the paths."""
    written = [out_dir / REPORT_MD, out_dir / MEMBERS_CSV]
    atomic_write_text(written[0], markdown(report, plots))
    atomic_write_text(written[1], members_csv(report))
    if report.configs is not None:
        written.append(out_dir / CONFIGS_CSV)
        atomic_write_text(written[-1], configs_csv(report))
    if report.comparisons:
        written.append(out_dir / COMPARISONS_CSV)
        atomic_write_text(written[-1], comparisons_csv(report))
    return written
