"""What people read: the report's tables as headers and cell strings, and the lines above them.

``report.md`` and the terminal both render these, so the two always show the same numbers in
the same format; the CSV files keep full precision instead (``files.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metarun.intervals import formatted
from metarun.report.comparisons import Comparison, SeedPair
from metarun.report.members import Member, inference_of
from metarun.report.paired import PairedStats
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
    inference = ["inference"] if report.inference_known else []
    headers = [
        "member",
        *report.swept,
        "status",
        *inference,
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
                m.label,
                *(_key_cell(m, k) for k in report.swept),
                m.status,
                *([(m.inference or "unknown") if m.complete else ""] if inference else []),
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
    done = ", ".join(m.label for m in row.complete)
    if not row.incomplete:
        return done
    missing = ", ".join(m.label for m in row.incomplete)
    return f"{done}; incomplete: {missing}" if done else f"incomplete: {missing}"


def config_table(report: Report) -> TextTable:
    assert report.configs is not None, "only sweeps over seed have a configuration table"
    single = _metric_title(report)
    test = f"test {single} (95% CI over seeds)" if single else "test (95% CI over seeds)"
    keys = report.config_keys
    inference = ["inference"] if report.inference_known else []
    headers = [*keys, *inference, "seeds", test, "train time", "members"]
    rows = []
    for row in report.configs:
        test_cell = ""
        if row.stats is not None:
            prefix = "" if single or row.metric is None else f"{row.metric} "
            test_cell = prefix + with_ci(row.metric, row.stats.mean, row.stats.ci95)
        rows.append(
            [
                *(row.values[k] or "" for k in keys),
                *([inference_of(row.members)] if inference else []),
                str(len(row.complete)),
                test_cell,
                clock(row.train_seconds),
                _members_cell(row),
            ]
        )
    first = len(keys) + len(inference)
    numeric = frozenset({first, first + 1, first + 2})
    return TextTable(headers, rows, numeric, [row.stats is None for row in report.configs])


def header_lines(report: Report) -> list[str]:
    """The facts above the tables: where, how many, which metric and order, the constants."""
    members = report.members
    done = sum(m.complete for m in members)
    missing = len(members) - done
    counts = f"{len(members)} ({done} complete, {missing} without a complete summary.json)"
    if not missing:
        counts = f"{len(members)} (all complete)"
    where = f"runs in: {report.path}" if report.runs else f"sweep: {report.path}"
    lines = [where, f"{'runs' if report.runs else 'members'}: {counts}"]
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


def signed(metric: str | None, mean: float, ci95: float | None) -> str:
    """A difference with its sign: ``+2.1 ± 0.8``, ``-0.013 ± 0.004``."""
    text = with_ci(metric, mean, ci95)
    return f"+{text}" if float(score(metric, mean)) > 0 else text


def p_value(p: float | None) -> str:
    """``0.042``, ``3.1e-07``; ``< 1e-300`` where the double underflowed."""
    if p is None:
        return ""
    if p == 0.0:
        return "< 1e-300"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def statistic(value: float | None) -> str:
    if value is None:
        return ""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.2f}"


def rank_sum(value: float | None) -> str:
    """A Wilcoxon rank sum: a whole or a half number."""
    return "" if value is None else f"{value:.1f}" if value % 1 else f"{value:.0f}"


def won_tied_lost(stats: PairedStats, metric: str | None) -> tuple[int, int, int]:
    """Episodes where A did better, the same, worse, in the metric's direction (an unknown
    direction counts higher as better, and the cell says so)."""
    if higher_is_better(metric) is False:
        return stats.lower, stats.tied, stats.higher
    return stats.higher, stats.tied, stats.lower


def shares(stats: PairedStats, metric: str | None) -> str:
    won, tied, lost = won_tied_lost(stats, metric)
    text = " / ".join(f"{100 * k / stats.n:.0f}" for k in (won, tied, lost))
    return text if higher_is_better(metric) is not None else f"{text} (higher / same / lower)"


def versus(comparison: Comparison) -> str:
    """``algorithm=protonet (transductive) vs algorithm=matchingnet (inductive)``."""
    a, b = comparison.a, comparison.b
    return f"{a.label} ({a.inference}) vs {b.label} ({b.inference})"


def _seed_row(comparison: Comparison, pair: SeedPair, prefix: str) -> list[str]:
    stats, metric = pair.stats, comparison.metric
    return [
        versus(comparison),
        pair.seed or "",
        str(stats.n),
        prefix + signed(metric, stats.mean, stats.ci95),
        statistic(stats.t),
        p_value(stats.t_p),
        rank_sum(stats.wilcoxon),
        p_value(stats.wilcoxon_p),
        shares(stats, metric),
    ]


def comparison_table(report: Report) -> TextTable:
    """One row per paired seed, and a row across seeds when more than one was paired."""
    single = _metric_title(report)
    difference = f"A - B {single} (95% CI)" if single else "A - B (95% CI)"
    headers = ["A vs B", "seed", "episodes", difference, "t", "p (t)", "W", "p (W)"]
    headers.append("A won / tied / lost (%)")
    rows = []
    for comparison in report.comparisons:
        metric = comparison.metric
        prefix = "" if single or metric is None else f"{metric} "
        rows += [_seed_row(comparison, pair, prefix) for pair in comparison.pairs]
        across = comparison.across
        if across is not None and across.n > 1:
            cells = [versus(comparison), f"{across.n} seeds", str(comparison.episodes)]
            rows.append([*cells, prefix + signed(metric, across.mean, across.ci95)] + [""] * 5)
    return TextTable(headers, rows, frozenset(range(1, 9)), [False] * len(rows))


def comparison_lines(report: Report) -> list[str]:
    """What the table cannot show: pairs refused and why, one-seed caveats, edge cases."""
    if not report.comparisons:
        if report.comparable < 2 or not any(m.complete for m in report.members):
            return []
        who = "run" if report.runs else "member"
        return [
            f"No complete {who} has an episodes.csv (runs before metarun recorded episodes): "
            "nothing to pair."
        ]
    lines = []
    for comparison in report.comparisons:
        name = versus(comparison)
        for pair in comparison.pairs:
            if pair.stats.note is not None:
                seed = f" seed {pair.seed}" if pair.seed is not None else ""
                lines.append(f"{name}{seed}: {pair.stats.note}.")
        if comparison.across is not None and comparison.across.n == 1:
            lines.append(
                f"{name}: one seed paired, so the seed variance is unknown; the interval "
                "covers the test episodes only."
            )
        lines += [f"{name}: not paired: {why}." for why in comparison.refused]
    return lines


COMPARISONS_NOTE = (
    "Pairs are scored on the same test episodes (same episode ids). A - B is the mean over "
    "those episodes of A's score minus B's (accuracy in points); ± is its 95% t interval over "
    "episodes. t and p (t): paired t test; W and p (W): Wilcoxon signed-rank test (zero "
    "differences dropped, normal approximation with tie correction); won / tied / lost: share "
    "of episodes where A did better, the same, worse for the metric's direction. A row over "
    "seeds gives the mean of the per-seed differences and its 95% t interval across seeds."
)
