"""scripts/rl2_bandits.py trains, validates and prints the test line beside the paper's RL²."""

from __future__ import annotations

import pytest
from script_modules import load_script


def test_prints_the_test_line_beside_the_papers(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--updates", "2", "--every", "1", "--hidden", "8", "--trials-per-update", "8"]
    argv += ["--val-trials", "10", "--test-trials", "20"]
    load_script("rl2_bandits").main(argv)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("RL² on 5-armed bandits, 10 pulls: GRU 8, 2 updates of 8 trials")
    assert lines[1].startswith("update    1  train return") and "val return" in lines[1]
    assert lines[3].startswith("test return ") and "(95% CI, 20 trials)  paper RL² 6.7" in lines[3]
    assert lines[4].startswith("mean pseudo-regret ")
