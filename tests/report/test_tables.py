from __future__ import annotations

import math

import pytest

from metarun.data.task import TaskSpec
from metarun.report.members import collect_sweep
from metarun.report.tables import HIGHER_IS_BETTER, build_report, split_keys


def test_swept_keys_differ_between_members_and_resume_is_never_one(seed_sweep) -> None:
    report = build_report(collect_sweep(seed_sweep))
    assert report.constants == {"experiment": "omniglot_sample", "logger": "none"}
    assert report.swept == ["optimizer.lr", "seed"]  # command-line order
    assert report.config_keys == ["optimizer.lr"]


def test_a_key_only_some_members_set_is_swept(tmp_path, member_writer) -> None:
    member_writer(tmp_path, 0, ["algorithm=maml", "resume=true"], test=(50.0, 1.0))
    member_writer(tmp_path, 1, ["algorithm=maml", "+trainer.grad_clip=1.0"], test=(60.0, 1.0))
    member_writer(tmp_path, 2, ["algorithm=maml", "+trainer.grad_clip=1.0"], test=(55.0, 1.0))
    constants, swept = split_keys(collect_sweep(tmp_path).members)
    assert constants == {"algorithm": "maml"} and swept == ["trainer.grad_clip"]
    report = build_report(collect_sweep(tmp_path))
    assert report.configs is None  # no seed swept: no aggregation
    assert [m.number for m in report.members] == [1, 2, 0]


def test_seeds_are_aggregated_per_configuration(seed_sweep) -> None:
    report = build_report(collect_sweep(seed_sweep))
    best, other = report.configs
    assert best.values == {"optimizer.lr": "0.01"}  # 96.5 beats 93.0: first
    assert [m.number for m in best.complete] == [3, 4]
    assert [m.number for m in best.incomplete] == [5]  # listed, never counted
    assert best.stats.n == 2 and best.stats.mean == pytest.approx(96.5)
    assert best.stats.ci95 == pytest.approx(12.7062 * math.sqrt(0.5) / math.sqrt(2))
    assert best.train_seconds == pytest.approx((40.0 + 50.0) / 2)
    assert other.values == {"optimizer.lr": "0.001"}
    assert other.stats.mean == pytest.approx(93.0)
    assert other.stats.std == pytest.approx(math.sqrt(7.0))
    assert other.stats.ci95 == pytest.approx(4.3027 * math.sqrt(7.0) / math.sqrt(3))
    assert best.metric == other.metric == "acc"


def test_rows_are_sorted_best_first_or_by_member(seed_sweep) -> None:
    by_score = build_report(collect_sweep(seed_sweep))
    assert [m.number for m in by_score.members] == [4, 3, 2, 1, 0, 5]  # incomplete last
    by_member = build_report(collect_sweep(seed_sweep), sort="member")
    assert [m.number for m in by_member.members] == [0, 1, 2, 3, 4, 5]
    assert [r.values["optimizer.lr"] for r in by_member.configs] == ["0.001", "0.01"]


def test_lower_is_better_for_mse(tmp_path, member_writer) -> None:
    for number, (lr, seed, mse) in enumerate(
        [("0.01", 0, 0.30), ("0.01", 1, 0.34), ("0.1", 0, 0.90), ("0.1", 1, 0.20)]
    ):
        member_writer(
            tmp_path,
            number,
            ["dataset=sinusoid", f"optimizer.lr={lr}", f"seed={seed}"],
            test=(mse, 0.01),
            metric="mse",
        )
    report = build_report(collect_sweep(tmp_path))
    assert [m.number for m in report.members] == [3, 0, 1, 2]
    assert [r.values["optimizer.lr"] for r in report.configs] == ["0.01", "0.1"]  # 0.32 < 0.55
    assert report.metrics == ["mse"]


def test_a_configuration_with_no_complete_member_has_no_numbers(tmp_path, member_writer) -> None:
    member_writer(tmp_path, 0, ["model=conv4", "seed=0"], test=(50.0, 1.0))
    member_writer(tmp_path, 1, ["model=mlp", "seed=0"], curve=[(2, 30.0)])
    member_writer(tmp_path, 2, ["model=mlp", "seed=1"])
    (tmp_path / "3").mkdir()  # overrides unknown: a member row, in no configuration
    report = build_report(collect_sweep(tmp_path))
    done, crashed = report.configs
    assert done.values == {"model": "conv4"} and done.stats.ci95 is None  # one seed
    assert crashed.stats is None and crashed.train_seconds is None
    assert [m.number for m in crashed.incomplete] == [1, 2]
    assert sum(len(r.members) for r in report.configs) == 3


def test_metric_directions_follow_the_task_spec() -> None:
    for kind in ("classification", "regression"):
        task = TaskSpec(kind, (1,), 1)
        assert HIGHER_IS_BETTER[task.metric] == task.higher_is_better


def test_a_sweep_over_seeds_alone_is_one_configuration(tmp_path, member_writer) -> None:
    for seed, mse in enumerate([0.30, 0.25, 0.28]):
        member_writer(
            tmp_path, seed, ["dataset=sinusoid", f"seed={seed}"], test=(mse, 0.02), metric="mse"
        )
    report = build_report(collect_sweep(tmp_path))
    assert report.swept == ["seed"] and report.config_keys == []
    (row,) = report.configs
    assert row.values == {} and row.stats.n == 3
    assert row.stats.mean == pytest.approx(0.83 / 3)
