"""Pairing configurations episode by episode: which members can be compared, and the numbers.

Two configurations are compared seed by seed: the member of A trained with seed s against the
member of B trained with seed s, on the test episodes both were scored on. A pair is formed only
when both files list the same episode ids in the same order; anything else (another eval.seed,
another data set, a run from before episodes were recorded) is refused with the reason, never
paired on a guess. Across seeds, the per-seed mean differences are summarised like the seeds of
a configuration (``stats.across_seeds``): the episode interval of one seed says nothing about
how another training seed would have done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from metarun.report.episodes import mismatch
from metarun.report.members import Member, inference_of
from metarun.report.paired import PairedStats, paired
from metarun.report.stats import SeedStats, across_seeds

SEED = "seed"


@dataclass(frozen=True)
class Side:
    """One configuration of a comparison: its label and its members (all seeds)."""

    label: str
    members: tuple[Member, ...]
    metric: str | None

    @property
    def inference(self) -> str:
        return inference_of(self.members)


@dataclass(frozen=True)
class SeedPair:
    """A's and B's members trained with one seed, and their paired test statistics."""

    seed: str | None  # None: the runs were paired as they are (no seed sweep)
    a: Member
    b: Member
    stats: PairedStats
    differences: tuple[float, ...]  # A - B per episode, in the report's units


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    metric: str | None
    pairs: tuple[SeedPair, ...]
    refused: tuple[str, ...]  # one line per seed that could not be paired, saying why
    across: SeedStats | None  # over the per-seed mean differences; None when nothing paired

    @property
    def episodes(self) -> int:
        return sum(p.stats.n for p in self.pairs)


def seed_of(member: Member) -> str | None:
    return (member.overrides or {}).get(SEED)


def _named(side: Side, seed: str | None) -> str:
    return side.label if seed is None else f"{side.label} seed {seed}"


def _pair(a: Side, b: Side, seed: str | None, ma: Member, mb: Member) -> SeedPair | str:
    """The pair, or why it cannot be one."""
    names = (_named(a, seed), _named(b, seed))
    for name, member in zip(names, (ma, mb), strict=True):
        if not member.complete:
            return f"{name} is {member.status} (no complete summary.json)"
        if member.episodes is None:
            return f"{name} {member.episodes_missing}"
    assert ma.episodes is not None and mb.episodes is not None
    why = mismatch(names[0], ma.episodes, names[1], mb.episodes)
    if why is not None:
        return why
    a_scores, b_scores = list(ma.episodes.scores), list(mb.episodes.scores)
    differences = tuple(x - y for x, y in zip(a_scores, b_scores, strict=True))
    return SeedPair(seed, ma, mb, paired(a_scores, b_scores), differences)


def _by_seed(side: Side) -> dict[str | None, list[Member]]:
    found: dict[str | None, list[Member]] = {}
    for member in side.members:
        found.setdefault(seed_of(member), []).append(member)
    return found


def compare(a: Side, b: Side, by_seed: bool = True) -> Comparison:
    """A against B, seed by seed (``by_seed``), or their single members as they are."""
    pairs: list[SeedPair] = []
    refused: list[str] = []
    if by_seed:
        seeds_a, seeds_b = _by_seed(a), _by_seed(b)
        matched = []
        for seed in dict.fromkeys([*seeds_a, *seeds_b]):
            own_a, own_b = seeds_a.get(seed, []), seeds_b.get(seed, [])
            for side, own in ((a, own_a), (b, own_b)):
                if not own:
                    refused.append(f"{side.label} has no member with seed {seed}")
                elif len(own) > 1:
                    numbers = ", ".join(m.label for m in own)
                    refused.append(f"{_named(side, seed)} is {len(own)} members ({numbers})")
            if len(own_a) == len(own_b) == 1:
                matched.append((seed, own_a[0], own_b[0]))
    else:
        matched = [(None, a.members[0], b.members[0])]
    for seed, ma, mb in matched:
        made = _pair(a, b, seed, ma, mb)
        if isinstance(made, str):
            refused.append(made)
        else:
            pairs.append(made)
    across = across_seeds([p.stats.mean for p in pairs]) if pairs else None
    return Comparison(a, b, a.metric, tuple(pairs), tuple(refused), across)


def compare_all(sides: Sequence[Side], by_seed: bool = True) -> list[Comparison]:
    """Every pair of configurations with the same test metric, A before B in the order given
    (the report's, best first unless sorted by member); none at all when no complete member
    recorded its episodes (a sweep from before episodes.csv), rather than a refusal per pair."""
    if not any(m.episodes is not None for side in sides for m in side.members):
        return []
    return [
        compare(a, b, by_seed)
        for i, a in enumerate(sides)
        for b in sides[i + 1 :]
        if a.metric == b.metric
    ]
