"""PNG plots of the validation score against the step, one line per member or per configuration.

Drawn on matplotlib's Agg canvas directly (no pyplot): no display, no global backend state, and
the PNG is rendered in memory and written atomically like every other report file. One plot per
test metric, so a sweep over data sets never puts accuracy and MSE on one axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from metarun.atomic import atomic_write_bytes
from metarun.pictures import file_stem, new_figure, png_bytes
from metarun.report.members import Member
from metarun.report.tables import SEED, ConfigRow, Report

MAX_LEGEND = 20  # beyond this a legend hides the plot; the CSV maps members to settings


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


def write_plots(report: Report, out_dir: Path) -> list[Path]:
    """``val_<metric>.png`` per member and, when seeds were swept, ``val_<metric>_by_config.png``
    with the seeds averaged; a metric with no validation logged yet gets no plot."""
    written = []
    for metric in report.metrics:
        made = [plot_members(report, metric, out_dir / f"val_{file_stem(metric)}.png")]
        if report.configs is not None:
            made.append(
                plot_configs(report, metric, out_dir / f"val_{file_stem(metric)}_by_config.png")
            )
        written += [p for p in made if p is not None]
    return written
