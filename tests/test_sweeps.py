"""Sweeps on the engines users have: submitit's launcher, Optuna's sweeper, and re-running a
sweep into its own directory to finish it."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml
from cli_helpers import metarun, one_line_error, start_metarun, wait_for_step

from metarun import cli
from metarun.tracking.metrics_file import read_metrics
from metarun.training.checkpoint import load_checkpoint


def summary(member: Path) -> dict:
    return json.loads((member / "summary.json").read_text())


def members(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_a_submitit_local_sweep_runs_every_member_as_a_job(tmp_path, tiny_overrides) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    done = metarun(
        "-m",
        "hydra/launcher=submitit_local",
        *tiny_overrides("protonet"),
        "optimizer.lr=0.001,0.002",
        "seed=0,1",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    found = members(sweep_dir)
    assert [p.name for p in found] == ["0", "1", "2", "3"]
    combos = set()
    for member in found:
        assert summary(member)["status"] == "complete"
        overrides = yaml.safe_load((member / ".hydra" / "overrides.yaml").read_text())
        combos.add(tuple(o for o in overrides if o.startswith(("optimizer.lr=", "seed="))))
    assert combos == {
        (f"optimizer.lr={lr}", f"seed={seed}") for lr in ("0.001", "0.002") for seed in (0, 1)
    }
    assert list((sweep_dir / ".submitit").iterdir())  # the jobs went through submitit


LONG_ENOUGH = ("trainer.max_steps=120", "trainer.val_every=40", "trainer.log_every=1")


def test_rerunning_a_sweep_skips_complete_members_and_resumes_stopped_ones(
    tmp_path, tiny_overrides
) -> None:
    sweep_dir = tmp_path / "sweep"
    command = [
        "-m",
        *tiny_overrides("protonet", *LONG_ENOUGH),
        "optimizer.lr=1e-3,2e-3",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    job = start_metarun(*command, cwd=tmp_path)
    wait_for_step(sweep_dir / "1", 5, job)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGTERM, stderr
    assert f"continue with re-run the sweep with hydra.sweep.dir={sweep_dir}" in stderr
    first, second = sweep_dir / "0", sweep_dir / "1"
    finished = (first / "summary.json").stat().st_mtime_ns
    stopped_at = load_checkpoint(second / "checkpoints" / "last.pt")["step"]
    assert 5 <= stopped_at < 120 and not (second / "summary.json").exists()

    again = metarun(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (first / "summary.json").stat().st_mtime_ns == finished  # skipped, not redone
    assert "is complete; nothing to do" in (first / "metarun.log").read_text()
    assert "resuming" in (second / "metarun.log").read_text()
    assert summary(second)["status"] == "complete" and summary(second)["steps"] == 120
    steps = [r["step"] for r in read_metrics(second / "metrics.jsonl")]
    assert steps == [*range(1, 121), 120]  # every step once, then the test line
    run_ids = {summary(m)["wandb_run_id"] for m in (first, second)}
    assert len(run_ids) == 2

    other = metarun(*command[:-2], "optimizer.lr=5e-3", command[-1], cwd=tmp_path)
    line = one_line_error(other)
    assert "holds another run (optimizer.lr 0.001 -> 0.005)" in line
    assert "hydra.sweep.dir" in line
    assert summary(first)["status"] == "complete"  # the result it holds is kept, and
    kept = yaml.safe_load((first / ".hydra" / "overrides.yaml").read_text())
    assert "optimizer.lr=0.001" in kept  # the record of how it was made


def test_a_failing_member_does_not_stop_the_others(tmp_path, tiny_overrides) -> None:
    sweep_dir = tmp_path / "sweep"
    done = metarun(
        "-m",
        *tiny_overrides("maml"),
        "optimizer.lr=1e-3,-1",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    line = one_line_error(done)
    assert "1 sweep member(s) failed" in line and "optimizer.lr: must be positive" in line
    good, bad = members(sweep_dir)
    assert summary(good)["status"] == "complete"
    assert summary(bad) == {
        "status": "failed",
        "error": "optimizer.lr: must be positive, got -1",
        "run_dir": str(bad),
    }


SINUSOID_SEARCH = (
    "experiment=sinusoid",
    "logger=none",
    "trainer.max_steps=6",
    "trainer.val_every=3",
    "trainer.log_every=3",
    "eval.val_episodes=8",
    "eval.test_episodes=8",
)


def test_an_optuna_search_returns_validation_scores_to_the_sampler(tmp_path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "search"
    done = metarun(
        "-m",
        "search=maml_sinusoid",
        "hydra.sweeper.n_trials=3",
        *SINUSOID_SEARCH,
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    trials = members(sweep_dir)
    assert len(trials) == 3
    scores = [summary(t)["best_val"]["score"] for t in trials]
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(min(scores))  # mse: minimised
    best = trials[scores.index(min(scores))]
    chosen = yaml.safe_load((best / ".hydra" / "overrides.yaml").read_text())
    for key, value in result["best_params"].items():
        assert f"{key}={value}" in chosen


def test_a_search_in_the_wrong_direction_is_refused(tmp_path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    done = metarun(
        "-m",
        "search=maml",  # maximises accuracy; sinusoid's validation metric is an MSE
        "hydra.sweeper.n_trials=1",
        *SINUSOID_SEARCH,
        f"hydra.sweep.dir={tmp_path / 'search'}",
        cwd=tmp_path,
    )
    line = one_line_error(done)
    assert "hydra.sweeper.direction: is maximize" in line and "use minimize" in line


@pytest.mark.parametrize(
    ("override", "extra"),
    [("hydra/launcher=slurm", "slurm"), ("search=maml", "optuna")],
)
def test_a_missing_plugin_names_its_extra(override, extra, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "_has_module", lambda name: False)
    with pytest.raises(SystemExit) as stopped:
        cli.preflight(["-m", override])
    assert stopped.value.code == 2
    assert f"needs the {extra} extra: pip install 'metarun[{extra}]'" in capsys.readouterr().err


def test_slurm_without_sbatch_says_where_to_run_it(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "_has_module", lambda name: True)
    monkeypatch.setattr(cli, "which", lambda program: None)
    with pytest.raises(SystemExit) as stopped:
        cli.preflight(["-m", "hydra/launcher=slurm", "seed=0,1"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "sbatch, which is not on PATH" in error and "hydra/launcher=submitit_local" in error


def test_the_slurm_launcher_config_composes_over_submitit(compose_config) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(cli.CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.max_num_timeout == 5
    assert launcher.signal_delay_s == 120 and launcher.gpus_per_node == 1
