"""scripts/benchmark.py, the old entry point: each mode flag reaches its module in
scripts/benchmarks/ with the rest of the command line, and two modes are one error."""

from __future__ import annotations

import pytest
from script_modules import load_benchmark, load_script

dispatcher = load_script("benchmark")


@pytest.mark.parametrize(
    ("argv", "module", "rest"),
    [
        (["--quick", "--threads", "1"], "maml_protonet", ["--quick", "--threads", "1"]),
        (["--family", "--quick"], "family", ["--quick"]),
        (["--algorithms", "maml", "--learners"], "learners", ["--algorithms", "maml"]),
        (["--data", "--no-caches"], "data_loading", ["--no-caches"]),
    ],
)
def test_a_mode_runs_its_module(monkeypatch, argv, module, rest) -> None:
    calls = []
    monkeypatch.setattr(load_benchmark(module), "main", calls.append)
    dispatcher.main(argv)
    assert calls == [rest]


def test_two_modes_are_an_error() -> None:
    with pytest.raises(SystemExit, match="separate runs; give one"):
        dispatcher.main(["--family", "--data"])
