"""scripts/benchmarks/timing.py, the core the benchmarks share: the memory probe, table lines,
and a case run in a fresh process of the benchmark's own module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from script_modules import load_benchmark

timing = load_benchmark("timing")
CPU = torch.device("cpu")


def test_table_line_aligns_text_left_and_numbers_right() -> None:
    assert timing.table_line(("ab", "1.5", "20"), (4, 5, 3), 1) == "ab      1.5   20"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_the_probe_sees_what_the_work_allocates() -> None:
    """As ``run_all`` runs a case in-process: memory earlier tests freed goes back to the OS
    first, so the block cannot be pages that are already resident."""
    timing.release_freed_memory()
    probe = timing.MemoryProbe(CPU)
    probe.start()
    block = torch.ones(64 * timing.MIB // 4)  # 64 MiB of float32, every page touched
    peak = probe.peak_bytes()
    del block
    assert probe.method == "VmHWM after clear_refs - VmRSS"
    assert peak >= 48 * timing.MIB, peak / timing.MIB


def test_time_steps_times_each_repeat_after_a_warm_up() -> None:
    calls = []
    seconds = timing.time_steps(lambda: calls.append(1), torch.nn.Linear(1, 1), 3, CPU)
    assert len(calls) == 4 and len(seconds) == 3 and all(s >= 0 for s in seconds)


def test_a_case_runs_in_a_fresh_process_of_its_benchmark(tmp_path: Path) -> None:
    """The family's own module is the child: it decodes the case, runs it and saves the
    result (2 tasks, 1 repeat)."""
    family = load_benchmark("family")
    case = family.FamilyCase("maml", "omniglot", "batched", max_tasks=2)
    result = timing.run_case_in_child(case, family.__file__, CPU, 1, 1)
    assert result["tasks"] == 2 and result["episode"] == [5, 1, 1]
    assert len(result["seconds"]) == 1 and result["peak_bytes"] > 0
