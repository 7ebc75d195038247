"""``metarun-eval`` and ``episodes.csv`` end to end on a tiny MAML run: the rows are the
checkpoint's per-episode scores, and a re-test with the run's settings reproduces its test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from metarun.api import rebuild
from metarun.hardware import Hardware
from metarun.retest import main, parse, retest
from metarun.run import RunContext, fixed_episodes, run
from metarun.training.checkpoint import load_checkpoint
from metarun.training.episode_records import episode_id

TEST_EPISODES = 7


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory, tiny_overrides, compose_config) -> Path:
    """MAML: transductive (the episode's batch statistics) and a fixed 3-way head."""
    run_dir = tmp_path_factory.mktemp("maml")
    overrides = tiny_overrides("maml", f"eval.test_episodes={TEST_EPISODES}")
    run(compose_config(overrides), RunContext(run_dir, "maml"))
    return run_dir


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_episode_rows_are_the_checkpoints_scores_episode_by_episode(maml_run) -> None:
    state = load_checkpoint(maml_run / "checkpoints" / "best.pt")
    learner, data = rebuild(state)
    learner.eval()
    cfg = OmegaConf.create(state["config"])
    episodes = fixed_episodes(cfg, data, "test", TEST_EPISODES, Hardware(device="cpu").setup())
    rows = read_rows(maml_run / "episodes.csv")
    assert len(rows) == TEST_EPISODES
    names = episodes.sampler.class_names
    with torch.no_grad():
        for row, plan, batch in zip(rows, episodes.plan, episodes.batches(1), strict=True):
            alone = data.task.score(learner.predict(batch).float(), batch.query_y)  # one episode
            assert float(row["score"]) == pytest.approx(alone.item(), abs=1e-4)
            classes = [names[c] for c in batch.classes[0].tolist()]
            assert row["classes"].split(";") == classes
            assert row["episode_id"] == episode_id(plan, classes, "test")
    summary = json.loads((maml_run / "summary.json").read_text())
    mean = sum(float(r["score"]) for r in rows) / len(rows)
    assert mean == pytest.approx(summary["test"]["mean"], abs=1e-4)
    assert summary["inference"] == "transductive" and summary["episodes_csv"] == "episodes.csv"


def test_a_retest_with_the_runs_settings_reproduces_its_test_exactly(maml_run, tmp_path) -> None:
    result, out = retest(parse([f"run_dir={maml_run}", f"out={tmp_path / 'again'}"]))
    before = json.loads((maml_run / "summary.json").read_text())
    after = json.loads((out / "summary.json").read_text())
    assert after["test"] == before["test"] and result.mean == before["test"]["mean"]
    assert (out / "episodes.csv").read_bytes() == (maml_run / "episodes.csv").read_bytes()
    assert after["source"]["step"] == before["best_val"]["step"]
    assert after["source"]["wandb_run_id"] == before["wandb_run_id"]
    assert after["inference"] == "transductive"


def test_a_retest_changes_the_episodes_it_is_asked_to(maml_run, tmp_path) -> None:
    wanted = ["dataset.ways=2", "eval.test_episodes=3", "eval.seed=5", "logger=none"]
    _, out = retest(parse([f"run_dir={maml_run}", f"out={tmp_path / 'other'}", *wanted]))
    rows = read_rows(out / "episodes.csv")
    assert [(r["ways"], r["seed"]) for r in rows] == [("2", "6")] * 3
    assert set(r["episode_id"] for r in rows).isdisjoint(
        r["episode_id"] for r in read_rows(maml_run / "episodes.csv")
    )
    overrides = (out / ".hydra" / "overrides.yaml").read_text()
    assert "dataset.ways=2" in overrides and "dataset.ways=3" not in overrides


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("algorithm.inner_lr=3", "algorithm.inner_lr: cannot be changed by a re-test"),
        ("dataset.wayz=2", "dataset.wayz: is not a key of the re-tested run's config"),
        ("dataset.ways=5", "dataset.ways: asks for 5-way episodes, but the learner's head has 3"),
        ("split=training", "split: must be one of test, val, train"),
        ("dataset.ways=1", "dataset.ways: must be at least 2"),
        ("eval.batch_size=abc", "eval.batch_size: must be"),
        ("dataset=omniglott", "dataset: unknown 'omniglott'; valid:"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(maml_run, tmp_path, capsys, argument, expected):
    with pytest.raises(SystemExit) as stopped:
        main([f"run_dir={maml_run}", f"out={tmp_path / 'bad'}", "logger=none", argument])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"metarun-eval: error: {expected}"), lines
    assert not (tmp_path / "bad" / "summary.json").exists()


def test_a_missing_run_is_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main([f"run_dir={tmp_path / 'none'}"])
    assert "run_dir: " in capsys.readouterr().err
