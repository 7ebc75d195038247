"""Finding the run to continue: ``resume=true`` by overrides, ``resume=<dir>`` with its own."""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from metarun.cli import with_saved_overrides
from metarun.resume import latest_matching_run, resume_run_dir


def make_run(root: Path, name: str, overrides: list[str], checkpoint: bool = True) -> Path:
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    return run_dir


def test_the_newest_run_with_the_same_overrides_is_continued(tmp_path: Path) -> None:
    older = make_run(tmp_path, "a", ["algorithm=maml", "seed=1"])
    newer = make_run(tmp_path, "b", ["seed=1", "algorithm=maml", "resume=true"])  # order, resume
    make_run(tmp_path, "c", ["algorithm=maml", "seed=2"])  # other overrides
    make_run(tmp_path, "d", ["algorithm=maml", "seed=1"], checkpoint=False)  # nothing to resume
    stamp = time.time()
    os.utime(older / "checkpoints" / "last.pt", (stamp - 100, stamp - 100))
    assert latest_matching_run(tmp_path, ["algorithm=maml", "seed=1", "resume=true"]) == newer
    assert latest_matching_run(tmp_path, ["algorithm=protonet"]) is None


def test_run_dir_resolution(tmp_path: Path) -> None:
    found = make_run(tmp_path, "a", ["seed=1"])
    fresh = str(tmp_path / "fresh")
    assert resume_run_dir(False, ["seed=1"], str(tmp_path), fresh) == fresh
    assert resume_run_dir(True, ["seed=1", "resume=true"], str(tmp_path), fresh) == str(found)
    assert resume_run_dir(True, ["seed=9"], str(tmp_path), fresh) == fresh  # starts anew
    assert resume_run_dir("some/dir", [], str(tmp_path), fresh) == "some/dir"


def test_an_explicit_run_dir_brings_its_overrides_and_the_command_line_wins(tmp_path) -> None:
    run_dir = make_run(tmp_path, "a", ["algorithm=protonet", "trainer.max_steps=300", "seed=3"])
    argv = ["--cfg", "job", f"resume={run_dir}", "trainer.max_steps=1000"]
    assert with_saved_overrides(argv) == [
        "--cfg",
        "job",
        "algorithm=protonet",
        "seed=3",
        f"resume={run_dir}",
        "trainer.max_steps=1000",
    ]
    assert with_saved_overrides(["resume=true", "seed=1"]) == ["resume=true", "seed=1"]
    assert with_saved_overrides(["-m", f"resume={run_dir}"]) == ["-m", f"resume={run_dir}"]
