from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from metarun.errors import CheckpointError
from metarun.training.checkpoint import Checkpoints, load_checkpoint, save_checkpoint


def state(step: int) -> dict:
    return {
        "step": step,
        "learner": {"w": torch.full((3,), float(step))},
        "rng": {"torch": torch.get_rng_state()},
        "config": {"seed": 0, "nested": {"lr": 1e-3, "names": ["a", "b"]}},
        "best_score": None,
    }


def test_round_trip_loads_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(state(3), path)
    raw = torch.load(path, weights_only=True)  # no arbitrary pickle needed
    assert raw["format"] == "metarun-checkpoint" and raw["version"] == 1
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["config"]["nested"]["names"] == ["a", "b"]
    torch.testing.assert_close(loaded["learner"]["w"], torch.full((3,), 3.0))


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(state(1), path)
    real_save = torch.save

    def dies_halfway(obj, handle):
        real_save(obj, handle)
        handle.truncate(10)  # a torn write ...
        raise KeyboardInterrupt  # ... interrupted before the rename

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(state(2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp files left behind


def test_best_is_a_copy_of_a_finished_last(tmp_path: Path) -> None:
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    checkpoints.save(state(1), best=True)
    checkpoints.save(state(2), best=False)
    assert load_checkpoint(checkpoints.best)["step"] == 1
    assert load_checkpoint(checkpoints.last)["step"] == 2
    checkpoints.save(state(3), best=True)
    assert checkpoints.best.read_bytes() == checkpoints.last.read_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "unreadable"),
        (b"not a zip at all", "unreadable"),
    ],
)
def test_corrupt_checkpoints_fail_in_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_truncated_checkpoint_fails_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(state(1), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="unreadable") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_arbitrary_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "metarun-checkpoint", "version": 1, "payload": pickle.loads}, path)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)


def test_foreign_and_future_files_are_named(tmp_path: Path) -> None:
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a metarun checkpoint"):
        load_checkpoint(foreign)
    future = tmp_path / "future.pt"
    torch.save({"format": "metarun-checkpoint", "version": 99}, future)
    with pytest.raises(CheckpointError, match="newer metarun"):
        load_checkpoint(future)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
