"""One run end to end, in process: what it writes, what it refuses, how it fails."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from every_learner import LEARNERS

from metarun.errors import ConfigError, MetarunError
from metarun.run import RunContext, run
from metarun.training.checkpoint import load_checkpoint
from metarun.training.trainer import Trainer, TrainingDiverged


def test_a_run_writes_metrics_checkpoints_and_summary(tmp_path, tiny_overrides, compose_config):
    run_dir = tmp_path / "run"
    best = run(compose_config(tiny_overrides("protonet")), RunContext(run_dir, "r"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["steps"] == 4
    assert summary["test"]["metric"] == "acc" and summary["test"]["episodes"] == 6
    assert 0 <= summary["test"]["mean"] <= 100 and summary["test"]["ci95"] >= 0
    assert summary["best_val"]["score"] == best and summary["best_val"]["step"] in (2, 4)
    assert len(summary["config_hash"]) == 64
    assert summary["versions"]["torch"] == version("torch")
    assert set(summary["git"]) == {"commit", "dirty"}
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["step"] == 4 and last["config"]["dataset"]["ways"] == 3
    assert set(last) >= {"learner", "optimizer", "scheduler", "rng", "wandb_run_id", "best_score"}
    assert (
        load_checkpoint(run_dir / "checkpoints" / "best.pt")["step"] == summary["best_val"]["step"]
    )


# Judge the initialisation on two episodes each: enough to record the plans.
NO_TRAINING = ("trainer.max_steps=0", "eval.val_episodes=2", "eval.test_episodes=2")


def test_every_algorithm_is_tested_on_the_same_fixed_episodes(
    tmp_path, tiny_overrides, compose_config, fixed_plans
) -> None:
    """Whatever the learner (and its training episodes), validation and test draw the same
    plans, so a sweep over algorithms is a fair comparison."""
    plans = fixed_plans
    shared = [o for o in tiny_overrides("maml") if not o.startswith("algorithm")]
    for seed, current in enumerate(LEARNERS):  # other training seeds too (trials: their own)
        plans.label = current
        overrides = [*shared, f"algorithm={current}", f"seed={seed}", *NO_TRAINING]
        run(compose_config(overrides), RunContext(tmp_path / current, current))
    reference = plans["maml"]
    assert len(reference) == 2  # validation and test
    for algorithm, drawn in plans.items():
        assert len(drawn) == 2 and all(map(torch.equal, drawn, reference)), algorithm
    assert {"protonet", "matchingnet", "siamese", "baseline_pp", "mann", "snail"} <= set(plans)
    assert not torch.equal(reference[0], reference[1])  # val and test differ


def test_a_directory_holding_a_run_is_never_overwritten(tmp_path, tiny_overrides, compose_config):
    run_dir = tmp_path / "run"
    run(compose_config(tiny_overrides("protonet")), RunContext(run_dir, "r"))
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run; pass resume=true"):
        run(compose_config(tiny_overrides("protonet")), RunContext(run_dir, "r"))
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before


def test_resuming_a_complete_run_reports_it_without_training(
    tmp_path, tiny_overrides, compose_config, monkeypatch, caplog
) -> None:
    run_dir = tmp_path / "run"
    first = run(compose_config(tiny_overrides("protonet")), RunContext(run_dir, "r"))
    monkeypatch.setattr(Trainer, "fit", lambda self: pytest.fail("trained again"))
    with caplog.at_level("INFO", logger="metarun"):
        again = run(
            compose_config(tiny_overrides("protonet", "resume=true")), RunContext(run_dir, "r")
        )
    assert again == first
    assert "is complete; nothing to do" in caplog.text
    assert "test acc" in caplog.text


def test_resume_from_a_directory_without_checkpoint_is_refused(
    tmp_path, tiny_overrides, compose_config
):
    empty = tmp_path / "empty"
    with pytest.raises(ConfigError, match="holds no checkpoints/last.pt"):
        run(compose_config(tiny_overrides("maml", f"resume={empty}")), RunContext(empty, "r"))


def test_zero_steps_tests_the_initialisation(tmp_path, tiny_overrides, compose_config) -> None:
    run_dir = tmp_path / "run"
    run(compose_config(tiny_overrides("maml", "trainer.max_steps=0")), RunContext(run_dir, "r"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 0 and summary["best_val"]["step"] == 0


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_overrides, compose_config, monkeypatch
) -> None:
    from metarun.algorithms import ProtoNet

    real_loss = ProtoNet.meta_loss
    calls = []

    def loss_turns_nan_at_step_3(learner, batch):
        calls.append(1)
        loss, metrics = real_loss(learner, batch)
        if len(calls) >= 3:
            loss = loss * float("nan")
            metrics["loss"] = loss.detach()
        return loss, metrics

    monkeypatch.setattr(ProtoNet, "meta_loss", loss_turns_nan_at_step_3)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        run(compose_config(tiny_overrides("protonet")), RunContext(run_dir, "r"))
    assert isinstance(info.value, MetarunError) and "\n" not in str(info.value)
    assert "optimizer.lr" in str(info.value)
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["step"] == 2
    assert all(torch.isfinite(t).all() for t in last["learner"].values() if t.is_floating_point())


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (("optimizer.lr=-0.001",), "optimizer.lr"),
        (("dataset.ways=500",), "dataset.ways"),
        (("dataset.shots=15", "dataset.queries=10"), "dataset.shots + dataset.queries"),
        (("algorithm.train_ways=500",), "algorithm.train_ways"),
        (("algorithm.meta_batch_size=0",), "algorithm.meta_batch_size"),
        (("trainer.val_every=0",), "trainer.val_every"),
        (("eval.test_episodes=0",), "eval.test_episodes"),
    ],
)
def test_impossible_settings_fail_before_training_naming_the_key(
    extra, key, tmp_path, tiny_overrides, compose_config, monkeypatch
) -> None:
    monkeypatch.setattr(Trainer, "fit", lambda self: pytest.fail("training started"))
    with pytest.raises(ConfigError) as info:
        run(compose_config(tiny_overrides("protonet", *extra)), RunContext(tmp_path, "r"))
    assert str(info.value).startswith(key) and "\n" not in str(info.value)
    assert not (Path(tmp_path) / "checkpoints").exists()
