"""The decoded-data cache: written once, reused, keyed on content and format, self-healing."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from metarun.data import cache as cache_module
from metarun.data import decode_pool
from metarun.data.cache import cache_key, cached, default_cache_dir
from metarun.data.images import ImageFormat
from metarun.data.omniglot import Omniglot

pytestmark = pytest.mark.usefixtures("isolated_data_cache")

BG, EV = "images_background_small1", "images_background_small2"
LAYOUT = {BG: {"Greek": 2, "Latin": 2}, EV: {"Tagalog": 2}}


@pytest.fixture
def tiny_root(tmp_path: Path, sample_copy) -> Path:
    """A private copy of a few real drawings (2 alphabets + 1 test alphabet, 3 drawings each)."""
    return sample_copy(tmp_path / "omniglot", LAYOUT)


def load(root: Path, cache_dir: Path, **options: object) -> dict[str, torch.Tensor]:
    omniglot = Omniglot(
        str(root),
        background=BG,
        evaluation=EV,
        val_alphabets=["Latin"],
        rotate=False,
        cache_dir=str(cache_dir),
        **options,
    )
    return {split: omniglot.classes(split) for split in ("train", "val", "test")}


def entries(cache_dir: Path) -> dict[str, int]:
    """Cache files and their modification times."""
    return {p.name: p.stat().st_mtime_ns for p in sorted(cache_dir.glob("*.pt"))}


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image file decoded from now on, by file name."""
    calls: list[str] = []
    real_decode = decode_pool.decode_file

    def counting_decode(path, *args, **kwargs):
        calls.append(Path(path).name)
        return real_decode(path, *args, **kwargs)

    monkeypatch.setattr(decode_pool, "decode_file", counting_decode)
    return calls


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image although the cache is current")

    monkeypatch.setattr(Image, "open", refuse)
    monkeypatch.setattr(ImageFormat, "encode", refuse)


def same(a: dict, b: dict) -> bool:
    return all(
        a[s].names == b[s].names
        and torch.equal(a[s].counts, b[s].counts)
        and torch.equal(a[s].images, b[s].images)
        for s in a
    )


def test_written_once_and_reused(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count_decodes: list[str]
) -> None:
    cache_dir = tmp_path / "cache"
    first = load(tiny_root, cache_dir)
    assert len(count_decodes) == (2 + 2 + 2) * 3, "each drawing is decoded exactly once"
    written = entries(cache_dir)
    assert len(written) == 2, "one entry per folder"
    assert all(name.startswith("omniglot-images_background_small") for name in written)
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(written), "temp files left"

    forbid_decoding(monkeypatch)
    second = load(tiny_root, cache_dir)
    assert same(first, second)
    assert entries(cache_dir) == written, "a current entry must not be rewritten"


def test_keyed_on_image_size(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count_decodes: list[str]
) -> None:
    cache_dir = tmp_path / "cache"
    at_28 = load(tiny_root, cache_dir)
    written = entries(cache_dir)
    count_decodes.clear()

    at_20 = load(tiny_root, cache_dir, image_size=20)
    assert len(count_decodes) == 18, "a new image size must decode afresh"
    assert at_20["train"].images.shape[1:] == (1, 20, 20)
    assert at_28["train"].images.shape[1:] == (1, 28, 28)
    now = entries(cache_dir)
    assert len(now) == 4 and {k: now[k] for k in written} == written

    forbid_decoding(monkeypatch)
    assert same(load(tiny_root, cache_dir), at_28)
    assert same(load(tiny_root, cache_dir, image_size=20), at_20)


def test_invalidated_when_a_file_changes(
    tiny_root: Path, tmp_path: Path, count_decodes: list[str]
) -> None:
    cache_dir = tmp_path / "cache"
    before = load(tiny_root, cache_dir)
    character = tiny_root / BG / "Greek"
    character = sorted(p for p in character.iterdir())[1]
    png = sorted(character.glob("*.png"))[0]
    old_mtime = png.stat().st_mtime_ns
    Image.new("L", (60, 60), color=0).save(png)  # all ink, a different size
    os.utime(png, ns=(old_mtime + 10**9, old_mtime + 10**9))
    count_decodes.clear()

    after = load(tiny_root, cache_dir)
    assert count_decodes, "a changed file must be decoded again"
    train_before, train_after = before["train"], after["train"]
    index = train_after.names.index(f"Greek/{character.name}")
    row = int(train_after.offsets[index])
    assert bool((train_after.images[row] == 0).all()), "the cache served the old drawing"
    assert not torch.equal(train_before.images[row], train_after.images[row])
    others = torch.ones(train_after.images.shape[0], dtype=torch.bool)
    others[row] = False
    assert torch.equal(train_before.images[others], train_after.images[others])
    assert torch.equal(before["test"].images, after["test"].images)


def test_invalidated_when_a_drawing_is_added(tiny_root: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    before = load(tiny_root, cache_dir)
    character = sorted((tiny_root / BG / "Latin").iterdir())[0]
    source = sorted(character.glob("*.png"))[0]
    (character / "9999_99.png").write_bytes(source.read_bytes())
    after = load(tiny_root, cache_dir)
    index = after["val"].names.index(f"Latin/{character.name}")
    assert int(after["val"].counts[index]) == int(before["val"].counts[index]) + 1


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_a_damaged_entry_is_rebuilt_with_a_warning(
    tiny_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    cache_dir = tmp_path / "cache"
    first = load(tiny_root, cache_dir)
    path = next(iter(sorted(cache_dir.glob(f"omniglot-{BG}-*.pt"))))
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a torch file" * 100)
    else:  # a valid file holding another data set's entry
        torch.save({"key": "something else", "images": torch.zeros(1)}, path)

    with caplog.at_level(logging.WARNING, logger="metarun.data.cache"):
        second = load(tiny_root, cache_dir)
    assert same(first, second)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()

    # The entry was rewritten, so a third run reads it without decoding.
    forbid_decoding(monkeypatch)
    assert same(load(tiny_root, cache_dir), first)


def test_an_unwritable_cache_dir_only_warns(
    tiny_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache dir cannot be created below a file")
    cache_dir = blocker / "cache"
    with caplog.at_level(logging.WARNING, logger="metarun.data.cache"):
        first = load(tiny_root, cache_dir)
        second = load(tiny_root, cache_dir)
    assert first["train"].images.shape == (2 * 3 * 1, 1, 28, 28)
    assert same(first, second)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 4 and all("could not write cache" in m for m in messages)


def test_cached_builds_only_on_a_miss(tmp_path: Path) -> None:
    builds: list[int] = []

    def build() -> dict:
        builds.append(1)
        return {"x": torch.arange(3)}

    key = cache_key({"anything": [1, 2]})
    assert len(key) == 64 and key == cache_key({"anything": [1, 2]})
    assert key != cache_key({"anything": [1, 3]})
    first = cached("demo", key, build, tmp_path)
    again = cached("demo", key, build, tmp_path)
    assert builds == [1]
    assert torch.equal(first["x"], again["x"]) and again["key"] == key
    cached("demo", cache_key("other"), build, tmp_path)
    assert builds == [1, 1]


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METARUN_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("METARUN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "metarun"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "metarun"
    assert cache_module.CACHE_FORMAT >= 1
