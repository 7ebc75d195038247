from __future__ import annotations

import pytest

from metarun import atomic
from metarun.atomic import atomic_write_bytes


def test_atomic_write_bytes_replaces_the_file_whole(tmp_path) -> None:
    target = tmp_path / "plots" / "val_acc.png"
    atomic_write_bytes(target, b"\x89PNG first")
    atomic_write_bytes(target, b"\x89PNG second")
    assert target.read_bytes() == b"\x89PNG second"
    assert [p.name for p in target.parent.iterdir()] == ["val_acc.png"]  # no temporary left


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "report.png"
    atomic_write_bytes(target, b"old")

    def dies(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", dies)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.png"]
