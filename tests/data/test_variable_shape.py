"""Meta-Dataset's variable ways and shots (``metarun.data.variable_shape``): the rules of the
authors' ``meta_dataset/data/sampling.py``, checked by hand on single draws and as bounds over
many, and the fixed episodes they give identical across processes."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarun.data.episodes import ClassImages, EpisodeSampler, EpisodeSpec, FixedEpisodes
from metarun.data.variable_shape import VariableShape
from metarun.errors import ConfigError

# 60 classes in 4 groups of different sizes, 6 to 40 images per class.
COUNTS = torch.tensor([6 + (7 * c) % 35 for c in range(60)])
GROUPS = [f"g{min(c // 10, 3)}" for c in range(60)]  # g0..g2: 10 classes each, g3: 30


def classes() -> ClassImages:
    images = torch.zeros(int(COUNTS.sum()), 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.repeat_interleave(torch.arange(60), COUNTS).to(torch.uint8)
    return ClassImages(images, COUNTS, [f"{g}/c{c}" for c, g in enumerate(GROUPS)])


def sampler(shape: VariableShape, within_group: bool = False) -> EpisodeSampler:
    return EpisodeSampler(
        classes(),
        EpisodeSpec(5, 1, 1),
        lambda x: x.float(),
        variable=shape,
        within_group=within_group,
    )


def described(plan: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Each episode's classes, shots and queries from its plan."""
    out = []
    offsets = torch.cumsum(COUNTS, 0) - COUNTS
    for row in plan:
        row = row[row[:, 0] > 0]
        chosen = torch.searchsorted(offsets, row[:, 2].contiguous(), right=True) - 1
        out.append((chosen, row[:, 0], int(row[0, 1])))
    return out


def test_a_draw_follows_the_authors_formulas_by_hand() -> None:
    shape = VariableShape()
    images = torch.tensor([20, 7, 40])
    assert shape.queries(images) == 3  # min(10, min(20 // 2, 7 // 2, 40 // 2))
    remaining = images - 3
    g = torch.Generator().manual_seed(5)
    beta = float(torch.rand((), generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    size = shape.support_size(remaining, g)
    expected = sum(math.floor(beta * min(100, r) + 1) for r in remaining.tolist())
    assert size == min(expected, 500)
    twin = torch.Generator().manual_seed(9)
    log_w = torch.empty(3, dtype=torch.float64).uniform_(math.log(0.5), math.log(2), generator=twin)
    weights = [n * math.exp(w) for n, w in zip(images.tolist(), log_w.tolist(), strict=True)]
    want = [
        min(math.floor(w / sum(weights) * (size - 3)) + 1, r)
        for w, r in zip(weights, remaining.tolist(), strict=True)
    ]
    got = shape.shots(images, remaining, size, torch.Generator().manual_seed(9))
    assert got.tolist() == want


def test_ways_shots_queries_and_support_sizes_obey_the_rules_over_many_draws() -> None:
    shape = VariableShape(min_ways=5, max_ways=50, max_query=10, max_support=500)
    plan = sampler(shape).draw(400, torch.Generator().manual_seed(0))
    ways_seen = set()
    for chosen, shots, queries in described(plan):
        ways = len(chosen)
        ways_seen.add(ways)
        assert 5 <= ways <= 50 and len(set(chosen.tolist())) == ways
        images = COUNTS[chosen]
        assert queries == min(10, int((images // 2).min()))
        remaining = images - queries
        assert (shots >= 1).all() and (shots <= remaining).all()
        assert ways <= int(shots.sum()) <= min(500, int(remaining.clamp(max=100).sum()))
    assert min(ways_seen) <= 7 and max(ways_seen) >= 48  # uniform over [5, 50]


def test_every_image_index_belongs_to_its_class_and_appears_once_per_episode() -> None:
    s = sampler(VariableShape(max_ways=12))
    for episode in s.gather(s.draw(20, torch.Generator().manual_seed(1))).episodes:
        support = episode.support_x[0, :, 0, 0, 0].long()  # each image holds its class
        query = episode.query_x[0, :, 0, 0, 0].long()
        classes_of = episode.classes[0]
        assert torch.equal(support, classes_of[episode.support_y[0]])
        assert torch.equal(query, classes_of[episode.query_y[0]])
        counts = torch.bincount(episode.query_y[0])
        assert (counts == counts[0]).all()  # balanced queries


def test_within_group_episodes_keep_to_one_group_of_at_least_min_ways() -> None:
    s = sampler(VariableShape(min_ways=5, max_ways=50), within_group=True)
    for chosen, _, _ in described(s.draw(200, torch.Generator().manual_seed(2))):
        groups = {GROUPS[c] for c in chosen.tolist()}
        assert len(groups) == 1
        size = GROUPS.count(groups.pop())
        assert 5 <= len(chosen) <= min(50, size)


def test_fixed_variable_episodes_are_the_same_in_another_process() -> None:
    shape = VariableShape(max_ways=20, max_support=60)
    here = FixedEpisodes(sampler(shape), 30, seed=7).plan
    code = (
        f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "import test_variable_shape as t;"
        "from metarun.data.episodes import FixedEpisodes;"
        "from metarun.data.variable_shape import VariableShape;"
        "torch.set_num_threads(1);"
        "p = FixedEpisodes(t.sampler(VariableShape(max_ways=20, max_support=60)), 30, 7).plan;"
        "print(p.flatten().tolist())"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert eval(there) == here.flatten().tolist()


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"min_ways": 1}, "dataset.variable.min_ways"),
        ({"max_ways": 3}, "dataset.variable.max_ways"),
        ({"max_support": 10}, "dataset.variable.max_support"),
        ({"max_query": 0}, "dataset.variable.max_query"),
        ({"ways": 5}, "dataset.variable"),
    ],
)
def test_bad_caps_are_one_line_naming_the_key(settings, key) -> None:
    with pytest.raises(ConfigError) as raised:
        VariableShape.of(settings)
    assert raised.value.key == key


def test_a_split_too_small_for_variable_episodes_is_refused() -> None:
    with pytest.raises(ConfigError, match="min_ways"):
        VariableShape(min_ways=61, max_ways=70).check_fits(COUNTS, "train")
    with pytest.raises(ConfigError, match="two per class"):
        VariableShape().check_fits(torch.tensor([5] * 9 + [1]), "train")
