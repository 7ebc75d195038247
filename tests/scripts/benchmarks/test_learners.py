"""scripts/benchmarks/learners.py: every learner built from its YAML, a training step and an
evaluation pass. Tiny settings (2 tasks, 1 repeat), so only the shape of the report is checked,
not the speed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from benchmark_helpers import run_benchmark, stand_in_children, table_rows, yaml_case_result
from script_modules import load_benchmark

learners = load_benchmark("learners")
from_yaml = load_benchmark("from_yaml")
timing = load_benchmark("timing")
TINY = ("--algorithms", "protonet,maml", "--max-tasks", "2", "--repeats", "1")


def test_learner_table_has_training_and_evaluation_rates(tmp_path: Path) -> None:
    done = run_benchmark("learners", *TINY, "--in-process", "--threads", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert [row[:4] for row in rows] == [
        ["protonet", "omniglot 1x28x28", "60w 1s 5q", "1"],  # its meta-batch: one episode
        ["maml", "omniglot 1x28x28", "5w 1s 1q", "2"],
    ], done.stdout
    for row in rows:
        assert row[7:9] == ["5w 1s 15q", "2"], row  # the data set's evaluation episodes
        for cell in (row[4], row[6], row[9], row[11]):
            assert math.isfinite(float(cell)) and float(cell) > 0, row
    assert rows[0][5] == rows[0][10] == "1.00x"  # protonet is the reference
    maml_ratio = float(rows[1][5].rstrip("x"))
    assert maml_ratio == pytest.approx(float(rows[1][4]) / float(rows[0][4]), rel=0.02)


def test_each_case_is_a_child_of_the_learners_module(monkeypatch, capsys) -> None:
    """Without ``--in-process`` every case goes to a process of learners.py (stood in for
    here: MAML takes four times ProtoNet's time per episode)."""

    def result(case) -> dict:
        return yaml_case_result(0.4 if case.algorithm == "maml" else 0.1)

    scripts = stand_in_children(monkeypatch, timing, result)
    learners.main(["--device", "cpu", *TINY])
    assert scripts == [str(Path(learners.__file__).resolve())] * 4
    rows = table_rows(capsys.readouterr().out)
    assert [(row[0], row[5], row[10]) for row in rows] == [
        ("protonet", "1.00x", "1.00x"),
        ("maml", "0.25x", "0.25x"),
    ]


def test_learner_cases_pair_training_with_evaluation() -> None:
    quick = from_yaml.QUICK_MAX_TASKS
    cases = learners.learner_cases(["protonet", "snail"], ["omniglot"], None, True)
    assert [(c.algorithm, c.variant, c.max_tasks) for c in cases] == [
        ("protonet", "batched", quick),
        ("protonet", "eval", quick),
        ("snail", "batched", quick),
        ("snail", "eval", quick),
    ]
    full = learners.learner_cases(["maml"], ["omniglot"], None, False)
    assert [c.max_tasks for c in full] == [32, learners.EVAL_TASKS]
    learner, batch = from_yaml.build_family_learner(full[1], "cpu")
    assert not learner.training and list(batch.query_x.shape) == [32, 75, 1, 28, 28]
