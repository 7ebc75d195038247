"""From members to the report's tables: which keys were swept, the order of the rows, and one
row per configuration with its seeds aggregated.

A key is swept when its value differs between members (or some members lack it); the others are
constants, shown once. ``resume`` is never a column: it says how a job was started, not what it
trained. When ``seed`` is swept, the members that differ only in their seed are one
configuration, summarised by the mean of their test means and a t interval across seeds;
incomplete members are listed with their configuration but never enter its numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from metarun.report.comparisons import Comparison, Side, compare_all
from metarun.report.members import Member, Sweep
from metarun.report.stats import SeedStats, across_seeds

SEED = "seed"
NEVER_COLUMNS = frozenset({"resume"})
# Direction of each test metric, as TaskSpec.higher_is_better defines it (kept in step by a test).
HIGHER_IS_BETTER = {"acc": True, "mse": False, "return": True}
SortOrder = Literal["score", "member"]


def higher_is_better(metric: str | None) -> bool | None:
    """None for a metric this version does not know: such rows keep their member order."""
    return HIGHER_IS_BETTER.get(metric) if metric is not None else None


@dataclass(frozen=True)
class ConfigRow:
    """One combination of the swept keys other than ``seed``, over all its seeds."""

    values: dict[str, str | None]
    members: tuple[Member, ...]
    stats: SeedStats | None  # over the complete members; None when none is complete
    train_seconds: float | None  # mean over the complete members
    metric: str | None

    @property
    def complete(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.complete)

    @property
    def incomplete(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if not m.complete)


@dataclass(frozen=True)
class Report:
    path: Path
    constants: dict[str, str]
    swept: list[str]  # in the order the command line gave them
    members: list[Member]  # in display order
    configs: list[ConfigRow] | None  # None unless seed was swept
    sort: SortOrder = "score"
    optuna: dict[str, Any] | None = None
    runs: bool = False  # separate run directories, not one sweep
    comparisons: list[Comparison] = field(default_factory=list)  # paired on shared episodes
    comparable: int = 0  # configurations (or runs) that could be compared

    @property
    def config_keys(self) -> list[str]:
        return [k for k in self.swept if k != SEED]

    @property
    def sources(self) -> list[tuple[str, bool]]:
        """Every source tested in a multi-source member, with whether it was held out, in
        the order the members list them."""
        return list(dict.fromkeys((s.name, s.held_out) for m in self.members for s in m.sources))

    @property
    def inference_known(self) -> bool:
        """Whether any member recorded its inference (an ``inference`` column is worth it)."""
        return any(m.inference is not None for m in self.members)

    @property
    def metrics(self) -> list[str]:
        """Every test metric in the sweep; more than one when it sweeps over data sets."""
        return list(dict.fromkeys(m.metric for m in self.members if m.metric is not None))


def split_keys(members: Iterable[Member]) -> tuple[dict[str, str], list[str]]:
    """(constant key -> value, swept keys), keys in the order they first appear."""
    known = [m.overrides for m in members if m.overrides is not None]
    keys = [k for k in dict.fromkeys(k for o in known for k in o) if k not in NEVER_COLUMNS]
    constants, swept = {}, []
    for key in keys:
        values = {o.get(key) for o in known}
        if len(values) == 1 and None not in values:
            constants[key] = values.pop()
        else:
            swept.append(key)
    return constants, swept


def aggregate(members: Iterable[Member], keys: list[str]) -> list[ConfigRow]:
    """One row per combination of ``keys`` (the swept keys but ``seed``), in first-seen order.
    Members whose overrides are unknown belong to no configuration."""
    groups: dict[tuple[str | None, ...], list[Member]] = {}
    for member in members:
        if member.overrides is not None:
            values = tuple(member.overrides.get(k) for k in keys)
            groups.setdefault(values, []).append(member)
    rows = []
    for values, group in groups.items():
        complete = [m for m in group if m.complete and m.test_mean is not None]
        times = [m.train_seconds for m in complete if m.train_seconds is not None]
        rows.append(
            ConfigRow(
                values=dict(zip(keys, values, strict=True)),
                members=tuple(group),
                stats=across_seeds([m.test_mean for m in complete]) if complete else None,
                train_seconds=sum(times) / len(times) if times else None,
                metric=complete[0].metric if complete else group[0].metric,
            )
        )
    return rows


def _rank(mean: float | None, metric: str | None, number: int) -> tuple[Any, ...]:
    """Best first within each metric; rows without a score, or of unknown direction, after."""
    direction = higher_is_better(metric)
    if mean is None:
        return (2, "", 0.0, number)
    if direction is None:
        return (1, metric or "", 0.0, number)
    return (0, metric, -mean if direction else mean, number)


def sort_members(members: Iterable[Member], order: SortOrder) -> list[Member]:
    if order == "member":
        return sorted(members, key=lambda m: m.number)
    return sorted(members, key=lambda m: _rank(m.test_mean, m.metric, m.number))


def sort_configs(rows: Iterable[ConfigRow], order: SortOrder) -> list[ConfigRow]:
    def first(row: ConfigRow) -> int:
        return min(m.number for m in row.members)

    if order == "member":
        return sorted(rows, key=first)
    return sorted(rows, key=lambda r: _rank(r.stats.mean if r.stats else None, r.metric, first(r)))


def config_label(values: dict[str, str | None], keys: Iterable[str]) -> str:
    """``optimizer.lr=0.001, algorithm=protonet``: a configuration's swept settings."""
    return ", ".join(f"{k}={values.get(k) or ''}" for k in keys)


def comparison_sides(
    sweep: Sweep, members: list[Member], keys: list[str], sort: SortOrder
) -> list[Side]:
    """What the paired comparisons compare: each run when runs were given one by one, else
    each configuration of the non-seed swept keys (a single member when seed was not swept)."""
    if sweep.runs:
        return [Side(m.label, (m,), m.metric) for m in members]
    rows = sort_configs(aggregate(sweep.members, keys), sort)
    return [Side(config_label(r.values, keys) or "all members", r.members, r.metric) for r in rows]


def build_report(sweep: Sweep, sort: SortOrder = "score") -> Report:
    constants, swept = split_keys(sweep.members)
    configs = None
    keys = [k for k in swept if k != SEED]
    if SEED in swept:
        configs = sort_configs(aggregate(sweep.members, keys), sort)
    members = sort_members(sweep.members, sort)
    sides = comparison_sides(sweep, members, keys, sort)
    return Report(
        path=sweep.path.resolve(),
        constants=constants,
        swept=swept,
        members=members,
        configs=configs,
        sort=sort,
        optuna=sweep.optuna,
        runs=sweep.runs,
        comparisons=compare_all(sides, by_seed=not sweep.runs),
        comparable=len(sides),
    )
