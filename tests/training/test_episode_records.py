"""``episodes.csv``: one row per fixed episode, describing it and its score."""

from __future__ import annotations

import csv
import io

import torch
from tiny_images import TinyImages

from metarun.data.episodes import FixedEpisodes
from metarun.data.task import TaskSpec
from metarun.training.episode_records import COLUMNS, episode_id, episode_table

CLASSIFICATION = TaskSpec("classification", (1, 8, 8), 3)


def rows_of(table) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(table.csv())))


def test_rows_name_each_episodes_classes_shape_and_score() -> None:
    data = TinyImages(ways=3, shots=2, queries=1, normalize=False)
    episodes = FixedEpisodes(data.sampler("test", data.episodes), 5, seed=1)
    scores = {"score": torch.arange(5, dtype=torch.float64) / 4}
    table = episode_table(episodes, scores, CLASSIFICATION, batch_size=2)
    rows = rows_of(table)
    assert table.columns == [*COLUMNS, "score"] and len(rows) == 5
    for index, (row, batch) in enumerate(zip(rows, episodes.batches(1), strict=True)):
        # TinyImages' pixels hold their class: the names must be those the episode shows.
        shown = (batch.support_x[0, ::2, 0, 0, 0] * 255).round().long().tolist()
        assert row["classes"].split(";") == [f"test{c - 20}" for c in shown]
        assert (row["episode"], row["seed"], row["ways"]) == (str(index), "1", "3")
        assert (row["shots"], row["queries"], row["source"]) == ("2", "1", "")
        assert float(row["score"]) == index / 4
    assert len({row["episode_id"] for row in rows}) == 5


def test_imbalanced_shots_are_listed_way_by_way() -> None:
    variable = {"min_ways": 2, "max_ways": 4, "max_support": 12}
    data = TinyImages(classes=8, per_class=6, variable=variable)
    episodes = FixedEpisodes(data.sampler("test", data.episodes), 6, seed=0)
    task = TaskSpec("classification", (1, 8, 8), 4)
    rows = rows_of(episode_table(episodes, {"score": torch.zeros(6)}, task, batch_size=3))
    for row, plan in zip(rows, episodes.plan, strict=True):
        shots = plan[plan[:, 0] > 0, 0].tolist()
        assert int(row["ways"]) == len(shots) == len(row["classes"].split(";"))
        expected = str(shots[0]) if len(set(shots)) == 1 else ";".join(map(str, shots))
        assert row["shots"] == expected
    assert any(";" in row["shots"] for row in rows)  # some episode is imbalanced


def test_an_episode_id_follows_its_content() -> None:
    plan = torch.tensor([[3, 4], [7, 9]])
    assert episode_id(plan, ["a", "b"]) == episode_id(plan.clone(), ["a", "b"])
    assert episode_id(plan, ["a", "b"]) != episode_id(plan + 1, ["a", "b"])
    assert episode_id(plan, ["a", "b"]) != episode_id(plan, ["a", "c"])
    assert episode_id(plan, ["a", "b"], "val") != episode_id(plan, ["a", "b"], "test")
    assert len(episode_id(plan, [])) == 16
