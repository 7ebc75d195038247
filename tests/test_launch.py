"""Hydra under torchrun, without starting processes: what a launch is refused for, and the run
directory every rank is given."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from metarun import distributed
from metarun.cli import CONFIG_DIR
from metarun.launch import launch_problem, output_dirs, quote


@pytest.fixture
def under_torchrun(monkeypatch: pytest.MonkeyPatch):
    def launched(world_size: int) -> None:
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", str(world_size))

    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return launched


def test_what_a_launch_is_refused_for(compose_config, under_torchrun) -> None:
    ddp = compose_config(["hardware=ddp", "algorithm.meta_batch_size=6"])
    single = compose_config(["hardware=cpu"])
    assert launch_problem(single, False, ["hardware=cpu"]) is None
    assert launch_problem(ddp, False, ["hardware=ddp", "seed=1"]) == (
        "hardware=ddp runs one process per GPU, started by torchrun: torchrun "
        "--nproc_per_node=<GPUs> --no-python metarun hardware=ddp seed=1 (or use hardware=auto "
        "for one process)"
    )
    under_torchrun(world_size=2)
    assert launch_problem(ddp, False, []) is None
    assert "add hardware=ddp" in launch_problem(single, False, [])
    assert "a sweep (-m) is not supported under torchrun" in launch_problem(ddp, True, [])
    under_torchrun(world_size=4)
    assert launch_problem(ddp, False, []) == (
        "algorithm.meta_batch_size: 6 tasks cannot be split evenly across 4 processes; use a "
        "multiple of 4"
    )


@pytest.mark.parametrize("path", ["/tmp/a b/run", "/tmp/it's", "/tmp/x=1,y", r"/tmp/back\slash\\"])
def test_a_quoted_directory_reaches_hydra_unchanged(path: str) -> None:
    override = OverridesParser.create().parse_override(f"hydra.run.dir={quote(path)}")
    assert override.value() == path


def test_rank_0_resolves_the_directories_hydra_would(tmp_path: Path) -> None:
    run_dir, sweep_dir = output_dirs(str(CONFIG_DIR), ["algorithm=protonet", "seed=1"])
    stamp = re.fullmatch(r"outputs/runs/(.+)_protonet-kanji", run_dir)
    assert stamp is not None and sweep_dir == f"outputs/multirun/{stamp.group(1)}"
    resumed = tmp_path / "earlier run"
    (resumed / "checkpoints").mkdir(parents=True)
    (resumed / "checkpoints" / "last.pt").write_bytes(b"x")
    run_dir, _ = output_dirs(str(CONFIG_DIR), [f"resume={quote(str(resumed))}"])
    assert run_dir == str(resumed)
