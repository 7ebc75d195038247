from __future__ import annotations

import json

import pytest

from metarun.report.members import (
    COMPLETE,
    INCOMPLETE,
    UNREADABLE,
    ReportError,
    collect_sweep,
    parse_overrides,
)


def test_members_are_numbered_dirs_in_numeric_order(tmp_path, member_writer) -> None:
    for number in (11, 2, 10, 0, 1):  # written out of order, two of them past 9
        member_writer(tmp_path, number, [f"seed={number}"], test=(50.0, 1.0), curve=[(2, 40.0)])
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    (tmp_path / "report.md").write_text("an older report\n")
    (tmp_path / "wandb").mkdir()  # other things share a sweep dir
    (tmp_path / "1e-3").mkdir()
    sweep = collect_sweep(tmp_path)
    assert [m.number for m in sweep.members] == [0, 1, 2, 10, 11]
    assert [m.overrides for m in sweep.members][3] == {"seed": "10"}
    assert sweep.optuna is None


def test_a_complete_member_reads_its_summary_and_curve(tmp_path, member_writer) -> None:
    member_writer(
        tmp_path,
        0,
        ["optimizer.lr=0.001", "seed=0"],
        test=(91.25, 0.75),
        curve=[(2, 80.0), (4, 85.0)],
        train_seconds=12.5,
    )
    (member,) = collect_sweep(tmp_path).members
    assert member.status == COMPLETE and member.complete
    assert (member.metric, member.test_mean, member.test_ci95, member.test_episodes) == (
        "acc",
        91.25,
        0.75,
        600,
    )
    assert (member.best_val, member.best_step, member.steps) == (85.0, 4, 4)
    assert member.train_seconds == 12.5
    assert member.curve == ((2, 80.0), (4, 85.0))


def test_members_without_a_complete_summary_are_kept(tmp_path, member_writer) -> None:
    member_writer(tmp_path, 0, ["seed=0"], curve=[(5, 60.0)], steps=7)  # crashed at step 7
    running = member_writer(tmp_path, 1, ["seed=1"], test=(50.0, 1.0))
    (running / "summary.json").write_text(json.dumps({"status": "failed"}))
    torn = member_writer(tmp_path, 2, ["seed=2"], test=(50.0, 1.0))
    (torn / "summary.json").write_text('{"status": "compl')
    member_writer(tmp_path, 3, ["dataset=sinusoid"], metric="mse", curve=[(2, 0.9), (4, 0.5)])
    no_overrides = tmp_path / "4"
    no_overrides.mkdir()
    members = collect_sweep(tmp_path).members
    assert [m.status for m in members] == [INCOMPLETE, "failed", UNREADABLE, INCOMPLETE, INCOMPLETE]
    assert not any(m.complete for m in members)
    assert all(m.test_mean is None for m in members)
    assert (members[0].steps, members[0].metric, members[0].curve) == (7, "acc", ((5, 60.0),))
    assert (members[0].best_val, members[0].best_step) == (60.0, 5)  # best so far
    assert (members[3].metric, members[3].steps) == ("mse", 4)  # metric from metrics.jsonl
    assert (members[3].best_val, members[3].best_step) == (0.5, 4)  # lower is better
    assert members[4].overrides is None and members[4].steps is None


def test_nan_validations_and_a_torn_last_line_are_skipped(tmp_path, member_writer) -> None:
    member = member_writer(tmp_path, 0, ["seed=0"], curve=[(1, 30.0), (2, 40.0)])
    with open(member / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 3, "val/acc": None}) + "\n")  # NaN is logged as null
        handle.write('{"step": 4, "val/ac')
    (read,) = collect_sweep(tmp_path).members
    assert read.curve == ((1, 30.0), (2, 40.0)) and read.steps == 3


def test_overrides_keep_their_command_line_values() -> None:
    assert parse_overrides(["optimizer.lr=0.001", "+trainer.extra=1", "~scheduler", "a=b=c"]) == {
        "optimizer.lr": "0.001",
        "trainer.extra": "1",
        "scheduler": "~",
        "a": "b=c",
    }


def test_optuna_results_are_read(tmp_path, member_writer) -> None:
    member_writer(tmp_path, 0, ["optimizer.lr=0.01"], test=(50.0, 1.0))
    (tmp_path / "optimization_results.yaml").write_text(
        "name: optuna\nbest_params:\n  optimizer.lr: 0.01\nbest_value: 48.5\n"
    )
    assert collect_sweep(tmp_path).optuna == {
        "best_params": {"optimizer.lr": 0.01},
        "best_value": 48.5,
    }


def test_what_is_not_a_sweep_is_named(tmp_path, member_writer) -> None:
    with pytest.raises(ReportError, match=f"{tmp_path / 'nope'} does not exist; give a dir"):
        collect_sweep(tmp_path / "nope")
    a_file = tmp_path / "summary.json"
    a_file.write_text("{}")
    with pytest.raises(ReportError, match="is not a directory"):
        collect_sweep(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match=r"empty holds no member directories; .*\(0/, 1/, ...\)"):
        collect_sweep(empty)
    single = tmp_path / "run"
    (single / ".hydra").mkdir(parents=True)
    with pytest.raises(ReportError, match="run is a single run, not a sweep"):
        collect_sweep(single)
    parent = tmp_path / "multirun"
    member_writer(parent / "2024-01-01_10-00-00", 0, ["seed=0"])
    member_writer(parent / "2024-01-02_10-00-00", 0, ["seed=0"])
    with pytest.raises(
        ReportError,
        match=f"holds sweeps, not members; give one of them, e.g. {parent / '2024-01-02_10-00-00'}",
    ):
        collect_sweep(parent)
