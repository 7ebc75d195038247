"""scripts/benchmarks/maml_protonet.py: MAML and ProtoNet against per-task loops, and the float64
check that both compute the same meta-gradient. The run uses 4 MAML tasks and 2 ProtoNet
episodes instead of 32 and 8, so it checks the report and the agreement, not the speed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from benchmark_helpers import stand_in_children, table_rows
from script_modules import load_benchmark

bench = load_benchmark("maml_protonet")
timing = load_benchmark("timing")


def test_quick_run_agrees_with_the_loops(monkeypatch, capsys) -> None:
    """The ``--quick`` cases, each sent to a process of maml_protonet.py (stood in for here by
    running the case in this one): every batched row agrees with its loop in float64."""
    monkeypatch.setattr(bench, "MAML_TASKS", 4)
    monkeypatch.setattr(bench, "PROTO_EPISODES", 2)
    cpu = torch.device("cpu")
    scripts = stand_in_children(monkeypatch, timing, lambda case: bench.run_case(case, cpu, 1))
    bench.main(["--quick", "--device", "cpu", "--repeats", "1"])  # no SystemExit: they agree
    assert scripts == [str(Path(bench.__file__).resolve())] * 6
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [row[:2] for row in rows] == [
        ["MAML strided 1-step second-order", "loop"],
        ["MAML strided 1-step second-order", "vmap"],
        ["MAML maxpool 1-step second-order", "loop"],
        ["MAML maxpool 1-step second-order", "vmap"],
        ["ProtoNet 20-way 1-shot", "loop"],
        ["ProtoNet 20-way 1-shot", "batched"],
    ], out
    for row in rows:
        assert all(math.isfinite(float(cell)) for cell in row[2:4]), row
        assert row[5].endswith("x") and (row[1] != "loop" or row[5] == "1.00x"), row
    assert "meta-batch 4" in out and "(--quick)" in out
    assert "ProtoNet 20-way 1-shot: batched" in out


def test_cases_put_each_groups_loop_first_and_travel_as_json() -> None:
    for quick in (True, False):
        rows = bench.cases(quick)
        for group in dict.fromkeys(case.group for case in rows):
            assert next(c for c in rows if c.group == group).variant == "loop", group
    case = bench.Case("maml", "vmap", 5, chunk_size=4)
    assert bench.decode_case(timing.encode_case(case)) == case


def agreement_table(batched_grads64: list) -> list:
    """A MAML group as ``summarise`` makes it from two rows' results (no timing run)."""
    rows = [bench.Case("maml", "loop"), bench.Case("maml", "vmap", channels_last=False)]
    loop = [torch.tensor([0.5, -2.0], dtype=torch.float64), torch.tensor([1.0e-3])]
    results = [
        {"seconds": [1.0], "peak_bytes": 0, "grads": loop, "grads64": loop},
        {"seconds": [0.5], "peak_bytes": 0, "grads": loop, "grads64": batched_grads64},
    ]
    return bench.summarise(rows, results)


def test_a_batched_row_that_disagrees_with_the_loop_in_float64_is_an_error() -> None:
    rounding = [torch.tensor([0.5, -2.0 + 4e-16], dtype=torch.float64), torch.tensor([1.0e-3])]
    bench.check_agreement(agreement_table(rounding))  # reduction order: fine
    wrong = [torch.tensor([0.5, -2.0], dtype=torch.float64), torch.tensor([1.1e-3])]
    expected = r"1 row\(s\) disagree .* MAML strided 1-step second-order / "
    with pytest.raises(SystemExit, match=expected):
        bench.check_agreement(agreement_table(wrong))
