"""A run stopped after k steps and resumed logs exactly what an uninterrupted run logs."""

from __future__ import annotations

import json

import pytest
from cli_helpers import TINY_RL2 as TINY_RL2_BASE
from cli_helpers import logged

from metarun.run import RunContext, run
from metarun.tracking.metrics_file import read_metrics
from metarun.training.checkpoint import load_checkpoint
from metarun.training.trainer import Trainer

TINY_RL2 = [*TINY_RL2_BASE, "trainer.max_steps=6", "eval.test_episodes=16"]


@pytest.mark.parametrize("algorithm", ["maml", "protonet", "metagan", "metagan_protonet", "rl2"])
def test_resume_after_a_crash_equals_an_uninterrupted_run(
    algorithm, tmp_path, tiny_overrides, compose_config, monkeypatch
) -> None:
    """For RL² too: its several PPO updates per meta-step, its per-meta-step schedule and its
    trials' keys all continue exactly from ``last.pt``."""
    overrides = TINY_RL2 if algorithm == "rl2" else tiny_overrides(algorithm, "trainer.max_steps=6")
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run(compose_config(overrides), RunContext(straight, "straight"))

    real_step = Trainer._train_step

    def node_fails_during_step_6(trainer: Trainer, step: int):
        if step == 6:
            raise RuntimeError("node failure")
        return real_step(trainer, step)

    monkeypatch.setattr(Trainer, "_train_step", node_fails_during_step_6)
    with pytest.raises(RuntimeError, match="node failure"):
        run(compose_config(overrides), RunContext(interrupted, "interrupted"))
    monkeypatch.undo()
    assert load_checkpoint(interrupted / "checkpoints" / "last.pt")["step"] == 4
    assert [r["step"] for r in read_metrics(interrupted / "metrics.jsonl")][-1] == 5

    run(compose_config([*overrides, "resume=true"]), RunContext(interrupted, "interrupted"))

    expected = logged(straight)
    assert [r["step"] for r in expected] == [1, 2, 3, 4, 5, 6, 6]  # the last line is the test
    assert logged(interrupted) == expected
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, interrupted)]
    assert summaries[0]["test"] == summaries[1]["test"]
    assert summaries[0]["best_val"] == summaries[1]["best_val"]
    assert summaries[0]["config_hash"] == summaries[1]["config_hash"]  # resume is not config
    if algorithm == "rl2":  # annealed to 0 over the six meta-steps, not over their 16 updates
        assert expected[-2]["train/lr"] == 0.0 and expected[-3]["train/lr"] > 0.0
