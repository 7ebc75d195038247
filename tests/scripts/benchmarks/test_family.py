"""scripts/benchmarks/family.py: the optimisation-based family built from its YAML, batched
against a per-task loop. Tiny settings (2 tasks, 1 repeat, Omniglot shape), so only the shape of
the report and of the learners is checked, not the speed."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from benchmark_helpers import run_benchmark, stand_in_children, table_rows, yaml_case_result
from script_modules import load_benchmark

family = load_benchmark("family")
from_yaml = load_benchmark("from_yaml")
timing = load_benchmark("timing")
TINY = ("--algorithms", "maml", "--shapes", "omniglot", "--max-tasks", "2", "--repeats", "1")


def rate_pair(cell: str) -> tuple[float, float]:
    """``"12.3 (11.9)"``: the fastest repeat's tasks/s and the median repeat's."""
    fastest, median = re.fullmatch(r"(\S+) \((\S+)\)", cell).groups()
    return float(fastest), float(median)


def test_family_table_for_maml(tmp_path: Path) -> None:
    done = run_benchmark(
        "family",
        "--quick",
        *TINY,
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


def test_each_case_is_a_child_of_the_family_module(monkeypatch, capsys) -> None:
    """Without ``--in-process`` every case goes to a process of family.py (stood in for here:
    the loop takes twice the batched row's time)."""

    def result(case) -> dict:
        return yaml_case_result(0.5 if case.variant == "loop" else 0.25)

    scripts = stand_in_children(monkeypatch, timing, result)
    family.main(["--device", "cpu", *TINY])
    assert scripts == [str(Path(family.__file__).resolve())] * 4
    rows = table_rows(capsys.readouterr().out)
    assert [(row[3], row[7]) for row in rows] == [
        ("batched vs loop", "2.00x"),
        ("checkpoint vs not", "1.00x"),
    ]


def test_unknown_algorithm_is_one_line() -> None:
    """``run_family`` checks the names before anything runs; ``sys.exit`` prints the message
    as the process's only stderr line."""
    with pytest.raises(SystemExit) as stop:
        from_yaml.family_algorithms("maml,nosuch", family.FAMILY)
    message = str(stop.value.code)
    assert len(message.splitlines()) == 1, message
    assert "--algorithms" in message and "nosuch" in message
    assert "maml" in message.split("available: ")[1]
    with pytest.raises(SystemExit, match="--shapes: unknown cifar"):
        from_yaml.family_shapes("omniglot,cifar")


def test_default_family_runs_what_has_a_config() -> None:
    from metarun.cli import options

    run, skipped = from_yaml.family_algorithms(None, family.FAMILY)
    assert run + skipped == [a for a in family.FAMILY if a in run] + skipped
    assert set(run) | set(skipped) == set(family.FAMILY)
    assert "maml" in run
    assert all(a in options("algorithm") for a in run)
    assert not any(a in options("algorithm") for a in skipped)


def test_pairs_and_child_round_trip() -> None:
    pairs = family.family_pairs(["maml", "protonet"], ["omniglot", "mini_imagenet"], None, False)
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
    quick = family.family_pairs(["maml"], ["omniglot"], None, True)
    assert quick[0].a.max_tasks == from_yaml.QUICK_MAX_TASKS
    # Cases travel to child processes as JSON.
    assert from_yaml.decode_case(timing.encode_case(checkpoint.a)) == checkpoint.a


def test_learners_are_built_as_configured() -> None:
    """The YAML's settings reach the learner; only the input shape changes the model."""
    omniglot, batch = from_yaml.build_family_learner(
        from_yaml.FamilyCase("maml", "omniglot", "loop"), "cpu"
    )
    assert omniglot.inner_lr == 2.0 and omniglot.inner_steps == 1 and not omniglot.first_order
    assert list(batch.support_x.shape) == [32, 5, 1, 28, 28]
    assert list(batch.query_x.shape) == [32, 5, 1, 28, 28]  # train_queries: the shots
    mini_case = from_yaml.FamilyCase("maml", "mini_imagenet", "batched", max_tasks=4)
    mini, batch = from_yaml.build_family_learner(mini_case, "cpu")
    assert list(batch.support_x.shape) == [4, 5, 3, 84, 84]
    first_conv = next(m for m in mini.model.modules() if isinstance(m, from_yaml.nn.Conv2d))
    assert (first_conv.in_channels, first_conv.out_channels) == (3, 32)
    checkpointed = from_yaml.FamilyCase(
        "maml",
        "omniglot",
        "batched",
        family.family_pairs(["maml"], ["omniglot"], 2, True)[-1].a.overrides,
    )
    learner, _ = from_yaml.build_family_learner(checkpointed, "cpu")
    assert learner.checkpoint_steps and learner.inner_steps == 5 and learner.second_order
