"""A run stopped after k steps and resumed logs exactly what an uninterrupted run logs."""

from __future__ import annotations

import json

import pytest
from cli_helpers import logged

from metarun.run import RunContext, run
from metarun.tracking.metrics_file import read_metrics
from metarun.training.checkpoint import load_checkpoint
from metarun.training.trainer import Trainer


@pytest.mark.parametrize("algorithm", ["maml", "protonet", "metagan", "metagan_protonet"])
def test_resume_after_a_crash_equals_an_uninterrupted_run(
    algorithm, tmp_path, tiny_overrides, compose_config, monkeypatch
) -> None:
    overrides = tiny_overrides(algorithm, "trainer.max_steps=6")
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


TINY_RL2 = [
    "algorithm=rl2",
    "dataset=bandit",
    "logger=none",
    "hardware=cpu",
    "algorithm.hidden_size=8",
    "algorithm.meta_batch_size=8",
    "algorithm.minibatches=2",
    "trainer.max_steps=6",
    "trainer.val_every=2",
    "trainer.log_every=1",
    "eval.val_episodes=16",
    "eval.test_episodes=16",
]


def test_rl2_resumed_after_a_crash_logs_what_an_uninterrupted_run_logs(
    tmp_path, compose_config, monkeypatch
) -> None:
    """RL²'s several PPO updates per meta-step, its per-meta-step schedule and its trials'
    keys all continue exactly from ``last.pt``."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run(compose_config(TINY_RL2), RunContext(straight, "straight"))
    real_step = Trainer._train_step

    def fails_during_step_6(trainer: Trainer, step: int):
        if step == 6:
            raise RuntimeError("node failure")
        return real_step(trainer, step)

    monkeypatch.setattr(Trainer, "_train_step", fails_during_step_6)
    with pytest.raises(RuntimeError, match="node failure"):
        run(compose_config(TINY_RL2), RunContext(interrupted, "interrupted"))
    monkeypatch.undo()
    run(compose_config([*TINY_RL2, "resume=true"]), RunContext(interrupted, "interrupted"))

    expected = logged(straight)
    assert [r["step"] for r in expected] == [1, 2, 3, 4, 5, 6, 6]
    assert expected[-2]["train/lr"] == 0.0  # annealed to 0 over the six meta-steps, not 6 x 4
    assert logged(interrupted) == expected
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, interrupted)]
    assert summaries[0]["test"] == summaries[1]["test"]
    assert summaries[0]["test"]["unit"] == "trials"
