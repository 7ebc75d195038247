"""scripts/bandit_baselines.py prints the paper's values beside its own rows."""

from __future__ import annotations

import pytest
from script_modules import load_script


def rows(block: str) -> dict[str, str]:
    return {line.split("|")[0].strip(): line for line in block.splitlines() if "|" in line}


def test_tables_print_ours_beside_the_papers(capsys: pytest.CaptureFixture[str]) -> None:
    load_script("bandit_baselines").main(["--trials", "30", "--pulls", "10", "--mdp-trials", "4"])
    out = capsys.readouterr().out
    bandits, mdps = (rows(block) for block in out.split("\n\n"))
    assert bandits["random"].split("|")[1].split()[3] == "5.0"  # mean ± ci, then the paper's
    assert bandits["gittins"].split("|")[1].split()[3] == "6.6"
    assert bandits["ucb1 (Beta prior, scale 0.2)"].split("|")[1].split()[3] == "6.7"
    assert bandits["thompson"].split("|")[1].split()[3] == "—"  # no checked paper value
    assert mdps["psrl"].split("|")[1].split()[3] == "138.1"
    assert "optimal (knows the MDP)" in mdps
    assert "exact expectations, n=10: Bayes-optimal 6.660, Gittins play 6.660" in out
