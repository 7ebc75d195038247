from __future__ import annotations

import json
from pathlib import Path

from metarun.tracking.metrics_file import MetricsFile, read_metrics


def test_one_json_object_per_logged_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    metrics = MetricsFile(path)
    metrics.log({"train/loss": 1.5, "val/acc": 80.0}, step=10)
    metrics.log({"train/loss": float("nan")}, step=20)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 10, "train/loss": 1.5, "val/acc": 80.0},
        {"step": 20, "train/loss": None},  # JSON has no NaN
    ]


def test_resume_drops_steps_after_the_checkpoint_and_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    first = MetricsFile(path)
    for step in (1, 2, 3, 4):
        first.log({"train/loss": float(step)}, step)
    with open(path, "a") as handle:
        handle.write('{"step": 5, "train/lo')  # killed mid-write
    resumed = MetricsFile(path, resume_step=2)
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    resumed.log({"train/loss": 3.0}, 3)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]


def test_a_fresh_run_starts_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n')
    MetricsFile(path)
    assert path.read_text() == ""
