"""PNG plots of the validation score against the step, one line per member or per configuration,
and of the per-episode differences of every paired comparison.

Drawn on matplotlib's Agg canvas directly (no pyplot): no display, no global backend state, and
the PNG is rendered in memory and written atomically like every other report file. One plot per
test metric, so a sweep over data sets never puts accuracy and MSE on one axis.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from metarun.atomic import atomic_write_bytes
from metarun.pictures import file_stem, new_figure, png_bytes
from metarun.report.comparisons import Comparison
from metarun.report.members import Member
from metarun.report.tables import SEED, ConfigRow, Report

MAX_LEGEND = 20  # beyond this a legend hides the plot; the CSV maps members to settings
# matplotlib 3.10 renamed boxplot's vert=False to orientation="horizontal" (vert is deprecated).
HORIZONTAL = (
    {"orientation": "horizontal"}
    if "orientation" in inspect.signature(Axes.boxplot).parameters
    else {"vert": False}
)
MAX_PAIRS = 20  # comparisons drawn in one paired_<metric>.png; comparisons.csv holds them all


def label(values: dict[str, str | None], keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={values.get(k) or ''}" for k in keys)


def member_label(report: Report, member: Member) -> str:
    text = label(member.overrides or {}, report.swept) or f"member {member.number}"
    return text if member.complete else f"{text} ({member.status})"


def seed_mean_curve(row: ConfigRow) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps every complete seed validated at, with the mean, min and max over seeds there."""
    curves = [dict(m.curve) for m in row.complete if m.curve]
    if not curves:
        return [], [], [], []
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    values = [[c[s] for c in curves] for s in steps]
    return (
        steps,
        [sum(v) / len(v) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def _figure(report: Report, metric: str, what: str) -> tuple[Figure, Axes]:
    figure = new_figure(8, 4.5)
    axes = figure.add_subplot()
    axes.set_xlabel("step")
    axes.set_ylabel(f"validation {metric}" + (" (%)" if metric == "acc" else ""))
    axes.set_title(f"{report.path.name}\nvalidation {metric}, {what}", fontsize="medium")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    return figure, axes


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"
    cmap = colormaps[name]
    return [cmap(i) for i in range(n)] if n <= 20 else [cmap(i / (n - 1)) for i in range(n)]


def _png(figure: Figure, axes: Axes, lines: int, path: Path) -> Path:
    if 0 < lines <= MAX_LEGEND:
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    atomic_write_bytes(path, png_bytes(figure))
    return path


def plot_members(report: Report, metric: str, path: Path) -> Path | None:
    members = [m for m in report.members if m.metric == metric and m.curve]
    if not members:
        return None
    members.sort(key=lambda m: m.number)
    figure, axes = _figure(report, metric, "one line per member")
    for member, color in zip(members, _colors(len(members)), strict=True):
        steps, values = zip(*member.curve, strict=True)
        style = "-" if member.complete else "--"
        axes.plot(steps, values, style, marker=".", color=color, label=member_label(report, member))
    return _png(figure, axes, len(members), path)


def plot_configs(report: Report, metric: str, path: Path) -> Path | None:
    curves = []
    for row in report.configs or []:
        if row.metric == metric:
            steps, mean, low, high = seed_mean_curve(row)
            if steps:
                curves.append((row, steps, mean, low, high))
    if not curves:
        return None
    figure, axes = _figure(report, metric, "mean over seeds (band: min to max)")
    for (row, steps, mean, low, high), color in zip(curves, _colors(len(curves)), strict=True):
        text = label(row.values, report.config_keys) or "all members"
        seeds = len([m for m in row.complete if m.curve])
        axes.plot(steps, mean, marker=".", color=color, label=f"{text} ({seeds} {SEED}s)")
        axes.fill_between(steps, low, high, color=color, alpha=0.15, linewidth=0)
    return _png(figure, axes, len(curves), path)


def plot_differences(report: Report, metric: str, path: Path) -> Path | None:
    """One box per comparison (its paired seeds pooled) of the per-episode differences A - B,
    the mean as a dot and zero as a line: how often and by how much A beat B, not only on
    average."""
    shown = [c for c in report.comparisons if c.metric == metric and c.pairs]
    if not shown:
        return None
    total, shown = len(shown), shown[:MAX_PAIRS]
    figure = new_figure(9, max(3.0, 1.5 + 0.5 * len(shown)))
    axes = figure.add_subplot()
    data = [[d for p in c.pairs for d in p.differences] for c in reversed(shown)]
    names = [_pair_name(c) for c in reversed(shown)]
    axes.boxplot(data, widths=0.6, flierprops={"markersize": 2}, **HORIZONTAL)
    means = [sum(d) / len(d) for d in data]
    axes.plot(means, range(1, len(data) + 1), "o", color="tab:red", label="mean")
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_yticks(range(1, len(data) + 1), names, fontsize="small")
    unit = " (points)" if metric == "acc" else ""
    axes.set_xlabel(f"A - B, test {metric} per episode{unit}")
    more = f", first {len(shown)} of {total} comparisons" if total > len(shown) else ""
    axes.set_title(
        f"{report.path.name}\npaired differences per test episode{more}", fontsize="medium"
    )
    axes.grid(alpha=0.3, axis="x")
    axes.legend(loc="best", fontsize="small")
    atomic_write_bytes(path, png_bytes(figure))
    return path


def _pair_name(comparison: Comparison) -> str:
    seeds = len(comparison.pairs)
    own = f"{comparison.a.label} vs {comparison.b.label}"
    return f"{own} ({seeds} seeds pooled)" if seeds > 1 else own


def write_plots(report: Report, out_dir: Path) -> list[Path]:
    """``val_<metric>.png`` per member and, when seeds were swept, ``val_<metric>_by_config.png``
    with the seeds averaged; a metric with no validation logged yet gets no plot. Then
    ``paired_<metric>.png`` for the comparisons that paired something."""
    written = []
    for metric in report.metrics:
        made = [plot_members(report, metric, out_dir / f"val_{file_stem(metric)}.png")]
        if report.configs is not None:
            made.append(
                plot_configs(report, metric, out_dir / f"val_{file_stem(metric)}_by_config.png")
            )
        written += [p for p in made if p is not None]
    for metric in report.metrics:
        made_pair = plot_differences(report, metric, out_dir / f"paired_{file_stem(metric)}.png")
        written += [made_pair] if made_pair is not None else []
    return written
