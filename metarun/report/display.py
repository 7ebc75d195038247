"""What people read: the report's tables as headers and cell strings, and the lines above them.

``report.md`` and the terminal both render these, so the two always show the same numbers in
the same format; the CSV files keep full precision instead (``files.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from metarun.intervals import formatted
from metarun.report.members import Member
from metarun.report.tables import ConfigRow, Report, higher_is_better


@dataclass(frozen=True)
class TextTable:
    headers: list[str]
    rows: list[list[str]]
    right: frozenset[int]  # columns of numbers, right-aligned
    faint: list[bool]  # rows of incomplete members (greyed on a terminal)


def score(metric: str | None, value: float) -> str:
    """Digits as the run's own result line prints them: acc 97.9, mse 0.227, return 6.62."""
    return formatted(metric, value)


def with_ci(metric: str | None, mean: float, ci95: float | None) -> str:
    """``97.9 ± 0.3``, or the mean alone when there is no interval (a single seed)."""
    return score(metric, mean) if ci95 is None else f"{score(metric, mean)} ± {score(metric, ci95)}"


def clock(seconds: float | None) -> str:
    """``4.2 s``, ``12:05``, ``1:02:03``: training times from a smoke test to days."""
    if seconds is None:
        return ""
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _metric_title(report: Report) -> str | None:
    """The one test metric of the sweep, or None when it mixes data sets with different ones."""
    metrics = report.metrics
    return metrics[0] if len(metrics) == 1 else None


def _key_cell(member: Member, key: str) -> str:
    if member.overrides is None:
        return "?"
    return member.overrides.get(key, "")


def member_table(report: Report) -> TextTable:
    single = _metric_title(report)
    test = f"test {single} (95% CI)" if single else "test (95% CI)"
    best = f"best val {single}" if single else "best val"
    sources = report.sources
    headers = [
        "member",
        *report.swept,
        "status",
        test,
        *(source_title(name, held_out) for name, held_out in sources),
        best,
        "steps",
        "train time",
    ]
    rows = []
    for m in report.members:
        own = {(s.name, s.held_out): s for s in m.sources}
        source_cells = [
            with_ci(m.metric, own[s].mean, own[s].ci95) if s in own else "" for s in sources
        ]
        prefix = "" if single or m.metric is None else f"{m.metric} "
        test_cell = with_ci(m.metric, m.test_mean, m.test_ci95) if m.test_mean is not None else ""
        best_cell = ""
        if m.best_val is not None:
            best_cell = score(m.metric, m.best_val)
            best_cell += f" @ {m.best_step}" if m.best_step is not None else ""
        rows.append(
            [
                str(m.number),
                *(_key_cell(m, k) for k in report.swept),
                m.status,
                prefix + test_cell if test_cell else "",
                *source_cells,
                prefix + best_cell if best_cell else "",
                "" if m.steps is None else str(m.steps),
                clock(m.train_seconds),
            ]
        )
    first = len(headers) - 4 - len(sources)
    numeric = frozenset({0, *range(first, len(headers))})  # member, test .. time
    return TextTable(headers, rows, numeric, [not m.complete for m in report.members])


def source_title(name: str, held_out: bool) -> str:
    """A source's column: ``omniglot (held out)``, ``kanji (in domain)``."""
    return f"{name} ({'held out' if held_out else 'in domain'})"


def _members_cell(row: ConfigRow) -> str:
    done = ", ".join(str(m.number) for m in row.complete)
    if not row.incomplete:
        return done
    missing = ", ".join(str(m.number) for m in row.incomplete)
    return f"{done}; incomplete: {missing}" if done else f"incomplete: {missing}"


def config_table(report: Report) -> TextTable:
    assert report.configs is not None, "only sweeps over seed have a configuration table"
    single = _metric_title(report)
    test = f"test {single} (95% CI over seeds)" if single else "test (95% CI over seeds)"
    keys = report.config_keys
    headers = [*keys, "seeds", test, "train time", "members"]
    rows = []
    for row in report.configs:
        test_cell = ""
        if row.stats is not None:
            prefix = "" if single or row.metric is None else f"{row.metric} "
            test_cell = prefix + with_ci(row.metric, row.stats.mean, row.stats.ci95)
        rows.append(
            [
                *(row.values[k] or "" for k in keys),
                str(len(row.complete)),
                test_cell,
                clock(row.train_seconds),
                _members_cell(row),
            ]
        )
    numeric = frozenset({len(keys), len(keys) + 1, len(keys) + 2})
    return TextTable(headers, rows, numeric, [row.stats is None for row in report.configs])


def header_lines(report: Report) -> list[str]:
    """The facts above the tables: where, how many, which metric and order, the constants."""
    members = report.members
    done = sum(m.complete for m in members)
    missing = len(members) - done
    counts = f"{len(members)} ({done} complete, {missing} without a complete summary.json)"
    if not missing:
        counts = f"{len(members)} (all complete)"
    lines = [f"sweep: {report.path}", f"members: {counts}"]
    metrics = []
    for metric in report.metrics:
        direction = higher_is_better(metric)
        better = {True: "higher is better", False: "lower is better", None: "direction unknown"}
        metrics.append(f"{metric} ({better[direction]})")
    order = "best test score first" if report.sort == "score" else "member number"
    lines.append(f"test metric: {', '.join(metrics) or 'none yet'}; rows sorted by {order}")
    if report.constants:
        constant = " ".join(f"{k}={v}" for k, v in report.constants.items())
        lines.append(f"same in every member: {constant}")
    if report.optuna is not None:
        params = " ".join(f"{k}={v}" for k, v in report.optuna["best_params"].items())
        lines.append(
            f"Optuna's best (optimization_results.yaml): {params} -> {report.optuna['best_value']}"
        )
    return lines


MEMBERS_NOTE = "test ± is each run's own 95% interval over its test episodes."
CONFIGS_NOTE = (
    "test is the mean over seeds of each member's test mean; ± is a 95% interval across seeds "
    "(Student's t, n - 1 degrees of freedom; none for a single seed). Incomplete members are "
    "listed but not counted."
)
