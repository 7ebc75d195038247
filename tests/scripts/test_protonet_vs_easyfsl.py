"""scripts/protonet_vs_easyfsl.py: every arm's metarun command composes to the run it claims to
be (the long comparison itself is a README command, not a test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from script_modules import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "protonet_vs_easyfsl.py"


@pytest.fixture(scope="module")
def script():
    return load_script("protonet_vs_easyfsl")


def test_each_arm_changes_one_setting_of_the_same_run(script) -> None:
    configs = {
        arm: script.compose(script.overrides(arm, "/data", 2000, "/cache"))
        for arm in script.ARMS
        if arm != "easyfsl"
    }
    base = configs["metarun"]
    assert base.algorithm.train_ways == 20 and base.algorithm.train_queries == 5
    assert base.trainer.max_steps == 2000 and base.dataset.background.endswith("small1")
    assert base.algorithm.distance == "squared" and base.algorithm.embedding == "joint"
    assert configs["metarun_last"] == base  # the same run, its other checkpoint
    assert configs["euclidean"].algorithm.distance == "euclidean"
    assert configs["separate"].algorithm.embedding == "separate"
    assert configs["raw"].dataset.normalize is False
    for arm in ("euclidean", "separate", "raw"):
        changed = [
            f"{group}.{key}"
            for group in ("algorithm", "dataset", "trainer", "optimizer")
            for key in base[group]
            if configs[arm][group][key] != base[group][key]
        ]
        assert len(changed) == 1, (arm, changed)


def test_an_unknown_arm_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--arms", "metarun,nosuch"], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "protonet_vs_easyfsl.py: --arms: unknown ['nosuch']; choose from "
        "['metarun', 'metarun_last', 'euclidean', 'separate', 'raw', 'easyfsl_settings', "
        "'easyfsl']"
    ]
