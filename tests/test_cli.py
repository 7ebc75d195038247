"""The installed ``metarun`` command, run from a directory outside the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from cli_helpers import metarun, one_line_error

from metarun.tracking.metrics_file import read_metrics
from metarun.training.checkpoint import load_checkpoint

FINAL_LINE = re.compile(r"^test acc \d+\.\d ± \d+\.\d \(95% CI, 6 episodes\)$")


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(p for p in (cwd / "outputs" / "runs").iterdir() if p.is_dir())


def with_wandb(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o != "logger=none"]


@pytest.mark.parametrize("algorithm", ["maml", "protonet"])
def test_end_to_end_on_the_omniglot_sample(algorithm, tmp_path, tiny_overrides) -> None:
    done = metarun(*with_wandb(tiny_overrides(algorithm)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert FINAL_LINE.match(lines[-1]), lines[-1]
    assert any("W&B: no credentials found, logging offline" in line for line in lines)
    assert any(line.startswith("step 2/4  loss") for line in lines)  # plain lines, no TTY
    (run_dir,) = run_dirs(tmp_path)
    assert run_dir.name.endswith(f"_{algorithm}-omniglot")
    for name in (".hydra/config.yaml", "metrics.jsonl", "summary.json", "metarun.log"):
        assert (run_dir / name).is_file(), name
    for name in ("last.pt", "best.pt"):
        assert (run_dir / "checkpoints" / name).is_file()
    assert yaml.safe_load((run_dir / ".hydra/config.yaml").read_text())["dataset"]["ways"] == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert lines[-1] == (
        f"test acc {summary['test']['mean']:.1f} ± {summary['test']['ci95']:.1f} "
        f"(95% CI, 6 episodes)"
    )
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("*.wandb"))
    assert wandb_run.name.endswith(summary["wandb_run_id"])


def test_a_sweep_runs_every_combination_in_its_own_directory(tmp_path, tiny_overrides) -> None:
    overrides = [o for o in tiny_overrides("maml") if not o.startswith("algorithm")]
    done = metarun(
        "-m", "algorithm=maml,protonet", "seed=0,1", "algorithm.meta_batch_size=2",
        *overrides, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    members = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [m.name for m in members] == ["0", "1", "2", "3"]
    combinations = set()
    for member in members:
        assert json.loads((member / "summary.json").read_text())["status"] == "complete"
        chosen = yaml.safe_load((member / ".hydra" / "overrides.yaml").read_text())
        combinations.add(tuple(sorted(o for o in chosen if o.startswith(("algorithm=", "seed=")))))
    assert combinations == {
        (f"algorithm={a}", f"seed={s}") for a in ("maml", "protonet") for s in (0, 1)
    }
    assert done.stdout.count("test acc") == 4


COMPARED = ["protonet", "matchingnet", "relationnet", "siamese", "baseline", "baseline_pp"]
COMPARED += ["mann", "snail"]


def test_the_comparison_preset_runs_every_learner_on_the_same_episodes(
    tmp_path, tiny_overrides
) -> None:
    """The end-to-end CLI run of each metric and memory learner on the Omniglot sample, with
    its YAML's own settings: one sweep, so one process start for all of them."""
    overrides = [o for o in tiny_overrides("maml") if not o.startswith(("algorithm", "experi"))]
    done = metarun("-m", "experiment=compare_omniglot", *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    members = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    assert len(members) == len(COMPARED)
    evaluated = []
    for member, algorithm in zip(members, COMPARED, strict=True):
        config = yaml.safe_load((member / ".hydra" / "config.yaml").read_text())
        assert config["algorithm"]["_target_"].startswith("metarun.algorithms.")
        assert f"algorithm={algorithm}" in (member / ".hydra" / "overrides.yaml").read_text()
        summary = json.loads((member / "summary.json").read_text())
        assert summary["status"] == "complete", (algorithm, summary)
        assert summary["test"]["episodes"] == 6 and 0 <= summary["test"]["mean"] <= 100
        evaluated.append((config["dataset"], config["eval"]))
        if algorithm.startswith("baseline"):  # the ClassSupervised hook sized its head
            stored = load_checkpoint(member / "checkpoints" / "best.pt")["learner"]
            key = "classifier.weight" if algorithm == "baseline" else "classifier.direction"
            assert stored[key].shape[0] > 3  # every training class, not an episode's ways
    # The test episodes are a plan drawn from the data set and eval settings alone.
    assert all(e == evaluated[0] for e in evaluated), "members were tested on other episodes"
    assert evaluated[0][0]["background"] == "images_background_small1"


def test_resume_true_finds_the_run_with_the_same_overrides(tmp_path, tiny_overrides) -> None:
    overrides = tiny_overrides("maml", "trainer.max_steps=2")
    assert metarun(*overrides, cwd=tmp_path).returncode == 0
    (first,) = run_dirs(tmp_path)
    again = metarun(*overrides, "resume=true", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "is complete; nothing to do" in again.stdout
    assert FINAL_LINE.match(again.stdout.strip().splitlines()[-1])
    assert run_dirs(tmp_path) == [first]  # no new directory

    # An explicit run dir continues it as it was configured (its saved overrides), here to
    # train further; the changed setting is reported.
    longer = metarun(f"resume={first}", "trainer.max_steps=4", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    assert "resuming with changed settings: trainer.max_steps 2 -> 4" in longer.stdout
    summary = json.loads((first / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["test"]["episodes"] == 6
    assert run_dirs(tmp_path) == [first]


def test_help_and_composed_config(tmp_path) -> None:
    shown = metarun("--help", cwd=tmp_path)
    assert shown.returncode == 0
    for group in ("algorithm:", "hardware:", "logger:"):
        assert group in shown.stdout
    (algorithms,) = [line for line in shown.stdout.splitlines() if line.startswith("algorithm: ")]
    assert {"maml", "protonet", "mamlpp"} <= set(algorithms[len("algorithm: ") :].split(", "))
    (datasets,) = [line for line in shown.stdout.splitlines() if line.startswith("dataset: ")]
    assert {"folder", "omniglot", "sinusoid"} <= set(datasets[len("dataset: ") :].split(", "))
    composed = metarun("--cfg", "job", "algorithm=protonet", "dataset.ways=20", cwd=tmp_path)
    assert composed.returncode == 0, composed.stderr
    config = yaml.safe_load(composed.stdout)
    assert config["algorithm"]["_target_"] == "metarun.algorithms.ProtoNet"
    assert config["dataset"]["ways"] == 20
    assert config["scheduler"]["step_size"] == 2000  # ProtoNet's paper schedule
    assert not (tmp_path / "outputs").exists()


def test_the_sinusoid_data_set_gets_the_paper_settings(tmp_path) -> None:
    composed = metarun("--cfg", "job", "dataset=sinusoid", cwd=tmp_path)
    config = yaml.safe_load(composed.stdout)
    assert config["model"]["_target_"] == "metarun.models.MLP"
    assert config["model"]["hidden"] == [40, 40]
    assert config["algorithm"]["inner_lr"] == 0.01 and config["algorithm"]["meta_batch_size"] == 25
    overridden = metarun(
        "--cfg", "job", "dataset=sinusoid", "algorithm.inner_lr=0.05", cwd=tmp_path
    )
    assert yaml.safe_load(overridden.stdout)["algorithm"]["inner_lr"] == 0.05


def test_unknown_group_option(tmp_path) -> None:
    line = one_line_error(metarun("algorithm=imaml", cwd=tmp_path))
    assert line.startswith("metarun: error: unknown algorithm 'imaml'; valid: ")
    assert {"maml", "protonet"} <= set(line.split("valid: ")[1].split(", "))
    line = one_line_error(metarun("-m", "dataset=omniglot,imagenet", cwd=tmp_path))
    assert "unknown dataset 'imagenet'" in line


def test_a_sweep_cannot_print_its_config(tmp_path) -> None:
    line = one_line_error(metarun("-m", "algorithm=maml,protonet", "--cfg", "job", cwd=tmp_path))
    assert "-m and --cfg cannot be combined" in line


def test_unknown_key(tmp_path) -> None:
    line = one_line_error(metarun("trainer.epochs=5", cwd=tmp_path))
    assert "trainer.epochs" in line


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("dataset.ways=500",), "dataset.ways: 500-way episodes need 500 classes"),
        (("optimizer.lr=-0.001",), "optimizer.lr: must be positive, got -0.001"),
    ],
)
def test_impossible_values(extra, expected, tmp_path, tiny_overrides) -> None:
    line = one_line_error(metarun(*tiny_overrides("protonet", *extra), cwd=tmp_path))
    assert expected in line


def test_missing_data_offline(tmp_path, tiny_overrides) -> None:
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    done = metarun(
        *tiny_overrides("maml", f"dataset.root={empty}", "dataset.download=false"), cwd=tmp_path
    )
    line = one_line_error(done)
    assert str(empty / "images_background_small1") in line and "dataset.download=true" in line


def test_corrupt_checkpoint(tmp_path, tiny_overrides) -> None:
    run_dir = tmp_path / "broken-run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"\x00" * 100)
    line = one_line_error(metarun(*tiny_overrides("maml", f"resume={run_dir}"), cwd=tmp_path))
    assert "last.pt is unreadable" in line
    missing = one_line_error(metarun(f"resume={tmp_path / 'nope'}", cwd=tmp_path))
    assert "holds no checkpoints/last.pt" in missing


def test_the_debug_presets_run_end_to_end(tmp_path, tiny_overrides) -> None:
    """debug=fast: one step of everything; debug=overfit: ProtoNet's loss on 4 repeated
    training episodes falls to near zero (on fresh episodes it stays near 0.5 here, measured),
    validated on those very episodes, tested on the real test split. One sweep, one process."""
    shared = [o for o in tiny_overrides("protonet") if not o.startswith(("trainer.", "eval."))]
    done = metarun("-m", "debug=fast,overfit", *shared, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    fast, overfit = (json.loads((sweep / m / "summary.json").read_text()) for m in ("0", "1"))
    assert fast["steps"] == 1 and fast["test"]["episodes"] == 1
    assert overfit["steps"] == 300 and overfit["best_val"]["score"] == 100.0
    assert overfit["test"]["episodes"] == 100 and overfit["test"]["mean"] < 90  # the gap
    losses = [
        r["train/loss"] for r in read_metrics(sweep / "1" / "metrics.jsonl") if "train/loss" in r
    ]
    assert sum(losses[-5:]) / 5 < 0.02, losses[-5:]


def test_a_one_way_episode_fails_before_hydra_runs(tmp_path) -> None:
    line = one_line_error(metarun("dataset.ways=1", cwd=tmp_path))
    assert line == (
        "metarun: error: dataset.ways: must be at least 2 (a 1-way episode is always right), got 1"
    )
    assert not (tmp_path / "outputs").exists()
