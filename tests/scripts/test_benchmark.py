"""scripts/benchmark.py --family: the optimisation-based family built from its YAML, batched
against a per-task loop. Tiny settings (2 tasks, 1 repeat, Omniglot shape), so only the shape of
the report and of the learners is checked, not the speed."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from script_modules import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The script as a module, for the parts that need no run."""
    return load_script("benchmark")


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def table_rows(stdout: str) -> list[list[str]]:
    """The family table's rows, split on the two-space column gaps."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("algorithm "))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def rate_pair(cell: str) -> tuple[float, float]:
    """``"12.3 (11.9)"``: the fastest repeat's tasks/s and the median repeat's."""
    fastest, median = re.fullmatch(r"(\S+) \((\S+)\)", cell).groups()
    return float(fastest), float(median)


def test_family_table_for_maml(tmp_path: Path) -> None:
    done = run_script(
        "--family",
        "--quick",
        "--algorithms",
        "maml",
        "--shapes",
        "omniglot",
        "--max-tasks",
        "2",
        "--repeats",
        "1",
        "--in-process",  # one torch import, not one per case
        "--threads",
        "1",  # two threads on two shared cores can be ten times slower than one
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    keys = [tuple(row[:5]) for row in rows]
    assert keys == [
        ("maml", "omniglot 1x28x28", "5w 1s 1q", "batched vs loop", "2"),
        ("maml 5-step 2nd-order", "omniglot 1x28x28", "5w 1s 1q", "checkpoint vs not", "2"),
    ], done.stdout
    for row in rows:
        (a, a_median), (b, b_median) = rate_pair(row[5]), rate_pair(row[6])
        ratio = float(row[7].rstrip("x"))
        peaks = [float(row[8]), float(row[9])]
        for value in (a, a_median, b, b_median, ratio, *peaks):
            assert math.isfinite(value) and value > 0, row
        assert ratio == pytest.approx(a / b, rel=0.02), row
    assert "skipped" not in done.stdout  # an explicit list runs what it names
    assert "maml 5-step 2nd-order: checkpoint_steps costs" in done.stdout


def test_unknown_algorithm_is_one_line(bench: ModuleType) -> None:
    """``run_family`` checks the names before anything runs; ``sys.exit`` prints the message
    as the process's only stderr line."""
    with pytest.raises(SystemExit) as stop:
        bench.family_algorithms("maml,nosuch")
    message = str(stop.value.code)
    assert len(message.splitlines()) == 1, message
    assert "--algorithms" in message and "nosuch" in message
    assert "maml" in message.split("available: ")[1]
    with pytest.raises(SystemExit, match="--shapes: unknown cifar"):
        bench.family_shapes("omniglot,cifar")


def test_default_family_runs_what_has_a_config(bench: ModuleType) -> None:
    from metarun.cli import options

    run, skipped = bench.family_algorithms(None)
    assert run + skipped == [a for a in bench.FAMILY if a in run] + skipped
    assert set(run) | set(skipped) == set(bench.FAMILY)
    assert "maml" in run
    assert all(a in options("algorithm") for a in run)
    assert not any(a in options("algorithm") for a in skipped)


def test_pairs_and_child_round_trip(bench: ModuleType) -> None:
    pairs = bench.family_pairs(["maml", "protonet"], ["omniglot", "mini_imagenet"], None, False)
    compared = [(p.title, p.a.shape, p.compared) for p in pairs]
    assert compared == [
        ("maml", "omniglot", "batched vs loop"),
        ("maml", "mini_imagenet", "batched vs loop"),
        ("protonet", "omniglot", "batched vs loop"),
        ("protonet", "mini_imagenet", "batched vs loop"),
        ("maml 5-step 2nd-order", "omniglot", "checkpoint vs not"),
        ("maml 5-step 2nd-order", "mini_imagenet", "checkpoint vs not"),
    ]
    assert [p.a.max_tasks for p in pairs[:2]] == [32, 4]
    checkpoint = pairs[-1]
    assert "algorithm.checkpoint_steps=true" in checkpoint.a.overrides
    assert "algorithm.checkpoint_steps=false" in checkpoint.b.overrides
    assert "algorithm.inner_steps=5" in checkpoint.a.overrides
    quick = bench.family_pairs(["maml"], ["omniglot"], None, True)
    assert quick[0].a.max_tasks == bench.QUICK_MAX_TASKS
    # Cases travel to child processes as JSON.
    for case in (checkpoint.a, bench.Case("maml", "vmap", 5, chunk_size=4)):
        assert bench.decode_case(bench.encode_case(case)) == case


def test_learners_are_built_as_configured(bench: ModuleType) -> None:
    """The YAML's settings reach the learner; only the input shape changes the model."""
    omniglot, batch = bench.build_family_learner(
        bench.FamilyCase("maml", "omniglot", "loop"), "cpu"
    )
    assert omniglot.inner_lr == 2.0 and omniglot.inner_steps == 1 and not omniglot.first_order
    assert list(batch.support_x.shape) == [32, 5, 1, 28, 28]
    assert list(batch.query_x.shape) == [32, 5, 1, 28, 28]  # train_queries: the shots
    mini_case = bench.FamilyCase("maml", "mini_imagenet", "batched", max_tasks=4)
    mini, batch = bench.build_family_learner(mini_case, "cpu")
    assert list(batch.support_x.shape) == [4, 5, 3, 84, 84]
    first_conv = next(m for m in mini.model.modules() if isinstance(m, bench.nn.Conv2d))
    assert (first_conv.in_channels, first_conv.out_channels) == (3, 32)
    checkpointed = bench.FamilyCase(
        "maml",
        "omniglot",
        "batched",
        bench.family_pairs(["maml"], ["omniglot"], 2, True)[-1].a.overrides,
    )
    learner, _ = bench.build_family_learner(checkpointed, "cpu")
    assert learner.checkpoint_steps and learner.inner_steps == 5 and learner.second_order


def test_learner_table_has_training_and_evaluation_rates(tmp_path: Path) -> None:
    done = run_script(
        "--learners",
        "--algorithms",
        "protonet,maml",
        "--max-tasks",
        "2",
        "--repeats",
        "1",
        "--in-process",
        "--threads",
        "1",
        cwd=tmp_path,
    )
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


def test_learner_cases_pair_training_with_evaluation(bench: ModuleType) -> None:
    cases = bench.learner_cases(["protonet", "snail"], ["omniglot"], None, True)
    assert [(c.algorithm, c.variant, c.max_tasks) for c in cases] == [
        ("protonet", "batched", bench.QUICK_MAX_TASKS),
        ("protonet", "eval", bench.QUICK_MAX_TASKS),
        ("snail", "batched", bench.QUICK_MAX_TASKS),
        ("snail", "eval", bench.QUICK_MAX_TASKS),
    ]
    full = bench.learner_cases(["maml"], ["omniglot"], None, False)
    assert [c.max_tasks for c in full] == [32, bench.EVAL_TASKS]
    learner, batch = bench.build_family_learner(full[1], "cpu")
    assert not learner.training and list(batch.query_x.shape) == [32, 75, 1, 28, 28]


def agreement_table(bench: ModuleType, batched_grads64: list) -> list:
    """A MAML group as ``summarise`` makes it from two rows' results (no timing run)."""
    rows = [bench.Case("maml", "loop"), bench.Case("maml", "vmap", channels_last=False)]
    loop = [torch.tensor([0.5, -2.0], dtype=torch.float64), torch.tensor([1.0e-3])]
    results = [
        {"seconds": [1.0], "peak_bytes": 0, "grads": loop, "grads64": loop},
        {"seconds": [0.5], "peak_bytes": 0, "grads": loop, "grads64": batched_grads64},
    ]
    return bench.summarise(rows, results)


def test_a_batched_row_that_disagrees_with_the_loop_in_float64_is_an_error(bench) -> None:
    rounding = [torch.tensor([0.5, -2.0 + 4e-16], dtype=torch.float64), torch.tensor([1.0e-3])]
    bench.check_agreement(agreement_table(bench, rounding))  # reduction order: fine
    wrong = [torch.tensor([0.5, -2.0], dtype=torch.float64), torch.tensor([1.1e-3])]
    expected = r"1 row\(s\) disagree .* MAML strided 1-step second-order / "
    with pytest.raises(SystemExit, match=expected):
        bench.check_agreement(agreement_table(bench, wrong))
