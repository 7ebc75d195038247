"""miniImageNet: both on-disk layouts, the shipped Ravi split, the cache and the errors users hit.

The files are written in the real formats (JPEGs named like Ravi's, csv files with his header,
pickles with the real keys), but tiny: a few classes of a few 12x12 images.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metarun.data.episodes import EpisodeSpec
from metarun.data.mini_imagenet import MiniImageNet, ravi_split
from metarun.data.pickles import load_numpy_pickle
from metarun.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_data_cache")

SPLITS = ("train", "val", "test")
OFFICIAL = ravi_split()
# A subset of each split: 5 training classes (for 5-way episodes), 2 validation, 2 test.
SUBSET = {"train": OFFICIAL["train"][:5], "val": OFFICIAL["val"][:2], "test": OFFICIAL["test"][-2:]}
PER_CLASS = 4
SIZE = 12


def write_jpeg(path: Path, seed: int, size: int = SIZE) -> None:
    """A small colour photo stand-in: smooth gradients plus a seeded colour blob."""
    rng = random.Random(seed)
    base = [rng.randrange(256) for _ in range(3)]
    pixels = bytearray()
    for y in range(size):
        for x in range(size):
            pixels += bytes((base[c] + 9 * x * (c + 1) + 5 * y) % 256 for c in range(3))
    Image.frombytes("RGB", (size, size), bytes(pixels)).save(path, quality=90)


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def write_mini(root: Path, layout: dict[str, list[str]], csvs: bool = True, pickles: bool = True):
    """Ravi's layout (images/ + csv files) and the pickles of the same images under ``root``."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    seed = 0
    for split, wnids in layout.items():
        rows = []
        for wnid in wnids:
            for i in range(1, PER_CLASS + 1):
                seed += 1
                name = f"{wnid}{i:08d}.jpg"
                write_jpeg(images / name, seed)
                rows.append((name, wnid))
        if csvs:
            lines = ["filename,label", *(f"{name},{wnid}" for name, wnid in rows)]
            (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
        if pickles:
            write_pickle(root / f"mini-imagenet-cache-{split}.pkl", images, rows)
    return root


def write_pickle(path: Path, images: Path, rows: list[tuple[str, str]]) -> None:
    """A cache pickle as Ren et al.'s code writes it: images in csv order, rows per wnid."""
    class_dict: dict[str, list[int]] = {}
    for index, (_, wnid) in enumerate(rows):
        class_dict.setdefault(wnid, []).append(index)
    data = np.stack([decoded(images / name) for name, _ in rows])
    with open(path, "wb") as handle:
        pickle.dump({"image_data": data, "class_dict": class_dict}, handle, protocol=4)


@pytest.fixture
def mini_root(tmp_path: Path) -> Path:
    return write_mini(tmp_path / "mini", SUBSET)


def make(root: Path, cache: Path, **options) -> MiniImageNet:
    return MiniImageNet(str(root), image_size=SIZE, cache_dir=str(cache), **options)


def one_line_error(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- the shipped split


def test_shipped_split_is_ravis_64_16_20() -> None:
    counts = {split: len(OFFICIAL[split]) for split in SPLITS}
    assert counts == {"train": 64, "val": 16, "test": 20}
    wnids = [w for split in SPLITS for w in OFFICIAL[split]]
    assert len(set(wnids)) == 100, "a class is in two splits"
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)
    # Spot checks against Ravi & Larochelle's csv files.
    assert OFFICIAL["train"][0] == "n01532829" and OFFICIAL["train"][-1] == "n13133613"
    assert OFFICIAL["val"][0] == "n01855672" and OFFICIAL["val"][-1] == "n09256479"
    assert OFFICIAL["test"][0] == "n01930112" and OFFICIAL["test"][-1] == "n07613480"


# --------------------------------------------------------------------------- both layouts


@pytest.mark.parametrize("layout", ["images", "pickle"])
def test_each_layout_loads(tmp_path: Path, layout: str) -> None:
    root = write_mini(tmp_path / "mini", SUBSET, pickles=layout == "pickle")
    if layout == "pickle":
        for path in (root / "images").iterdir():  # the pickles alone suffice
            path.unlink()
        (root / "images").rmdir()
        for split in SPLITS:
            (root / f"{split}.csv").unlink()
    mini = make(root, tmp_path / "cache")
    for split in SPLITS:
        classes = mini.classes(split)
        assert classes.names == sorted(SUBSET[split])
        assert classes.counts.tolist() == [PER_CLASS] * len(SUBSET[split])
        assert classes.images.shape == (PER_CLASS * len(SUBSET[split]), 3, SIZE, SIZE)
        assert classes.images.dtype == torch.uint8
    names = [set(mini.classes(s).names) for s in SPLITS]
    assert not names[0] & names[1] and not names[0] & names[2] and not names[1] & names[2]
    # The stored pixels are the JPEG's pixels.
    first = root.parent / "mini" / "images" / f"{SUBSET['val'][0]}00000001.jpg"
    if first.exists():
        expected = torch.from_numpy(decoded(first)).permute(2, 0, 1)
        assert torch.equal(mini.classes("val").images[0], expected)


@pytest.mark.parametrize("image_size", [SIZE, 16])
def test_both_layouts_give_identical_tensors(
    mini_root: Path, tmp_path: Path, image_size: int, caplog: pytest.LogCaptureFixture
) -> None:
    options = {"image_size": image_size, "cache_dir": str(tmp_path / "cache")}
    from_images = MiniImageNet(str(mini_root), format="images", **options)
    from_pickles = MiniImageNet(str(mini_root), format="pickle", **options)
    for split in SPLITS:
        a, b = from_images.classes(split), from_pickles.classes(split)
        assert a.names == b.names and torch.equal(a.counts, b.counts)
        assert a.images.shape[-2:] == (image_size, image_size)
        assert torch.equal(a.images, b.images)
    with caplog.at_level(logging.INFO, logger="metarun.data.mini_imagenet"):
        MiniImageNet(str(mini_root), **options).classes("train")
    assert "pickle layout" in caplog.text, "auto should prefer the complete pickles"


def test_images_without_csvs_use_the_shipped_split(tmp_path: Path) -> None:
    root = write_mini(tmp_path / "mini", OFFICIAL, csvs=False, pickles=False)
    mini = make(root, tmp_path / "cache")
    assert [mini.classes(s).num_classes for s in SPLITS] == [64, 16, 20]
    assert mini.classes("test").names == OFFICIAL["test"]
    assert int(mini.classes("train").counts.sum()) == 64 * PER_CLASS

    (root / "images" / f"{OFFICIAL['val'][3]}00000001.jpg").unlink()
    for i in range(2, PER_CLASS + 1):
        (root / "images" / f"{OFFICIAL['val'][3]}{i:08d}.jpg").unlink()
    with pytest.raises(DataError) as info:
        make(root, tmp_path / "cache").classes("train")
    assert OFFICIAL["val"][3] in one_line_error(info) and str(root / "images") in str(info.value)


def test_csvs_must_agree_with_the_shipped_split(mini_root: Path, tmp_path: Path) -> None:
    train_csv = mini_root / "train.csv"
    stranger = OFFICIAL["test"][0]  # a test class, listed for training
    (mini_root / "images" / f"{stranger}00000001.jpg").write_bytes(b"")
    train_csv.write_text(train_csv.read_text() + f"{stranger}00000001.jpg,{stranger}\n")
    with pytest.raises(DataError) as info:
        make(mini_root, tmp_path / "cache", format="images").classes("train")
    message = one_line_error(info)
    assert str(train_csv) in message and stranger in message and "test split" in message


def test_a_subset_is_reported(mini_root: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="metarun.data.mini_imagenet"):
        make(mini_root, tmp_path / "cache", format="images").classes("train")
    assert "5 of the 64 train classes" in caplog.text


def test_sampler_draws_a_5_way_episode(mini_root: Path, tmp_path: Path) -> None:
    mini = make(mini_root, tmp_path / "cache", ways=5, shots=1, queries=3)
    assert mini.task.input_shape == (3, SIZE, SIZE)
    sampler = mini.sampler("train", mini.episodes)
    batch = sampler.gather(sampler.draw(2, torch.Generator().manual_seed(0)))
    assert batch.support_x.shape == (2, 5, 3, SIZE, SIZE)
    assert batch.query_x.shape == (2, 15, 3, SIZE, SIZE)
    assert batch.support_y.tolist()[0] == [0, 1, 2, 3, 4]
    assert sorted(batch.query_y[0].tolist()) == [c for c in range(5) for _ in range(3)]
    with pytest.raises(ConfigError):
        mini.sampler("val", EpisodeSpec(5, 1, 1))  # only 2 validation classes here


# --------------------------------------------------------------------------- the cache


@pytest.mark.parametrize("layout", ["images", "pickle"])
def test_a_changed_file_rebuilds_the_cache(mini_root: Path, tmp_path: Path, layout: str) -> None:
    cache = tmp_path / "cache"
    before = make(mini_root, cache, format=layout).classes("val").images.clone()
    entries = set(cache.iterdir())
    assert make(mini_root, cache, format=layout).classes("val").images.equal(before)
    assert set(cache.iterdir()) == entries, "a current cache was rebuilt"

    jpeg = mini_root / "images" / f"{SUBSET['val'][0]}00000002.jpg"
    write_jpeg(jpeg, seed=999)
    if layout == "pickle":
        rows = [line.split(",") for line in (mini_root / "val.csv").read_text().split()[1:]]
        write_pickle(mini_root / "mini-imagenet-cache-val.pkl", mini_root / "images", rows)
    path = jpeg if layout == "images" else mini_root / "mini-imagenet-cache-val.pkl"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = make(mini_root, cache, format=layout).classes("val").images
    assert not torch.equal(after[1], before[1]), "the changed image was not decoded again"
    assert torch.equal(after[0], before[0]) and torch.equal(after[2:], before[2:])
    assert torch.equal(after[1], torch.from_numpy(decoded(jpeg)).permute(2, 0, 1))


# --------------------------------------------------------------------------- errors


def test_missing_data_lists_both_layouts(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        make(root, tmp_path / "cache").classes("train")
    message = one_line_error(info)
    assert str(root / "images") in message and str(root / "train.csv") in message
    for split in SPLITS:
        assert str(root / f"mini-imagenet-cache-{split}.pkl") in message
    assert not root.exists()


def test_missing_pickles_are_named(mini_root: Path, tmp_path: Path) -> None:
    (mini_root / "mini-imagenet-cache-val.pkl").unlink()
    with pytest.raises(DataError) as info:
        make(mini_root, tmp_path / "cache", format="pickle").classes("train")
    message = one_line_error(info)
    assert message.startswith(
        f"miniImageNet pickles missing: {mini_root / 'mini-imagenet-cache-val.pkl'};"
    )


def test_missing_image_and_missing_csv_are_named(mini_root: Path, tmp_path: Path) -> None:
    gone = mini_root / "images" / f"{SUBSET['test'][1]}00000003.jpg"
    gone.unlink()
    with pytest.raises(DataError) as info:
        make(mini_root, tmp_path / "cache", format="images").classes("train")
    assert one_line_error(info).startswith(f"{gone} is missing")
    (mini_root / "val.csv").unlink()
    with pytest.raises(DataError) as info:
        make(mini_root, tmp_path / "cache", format="images").classes("train")
    assert str(mini_root / "val.csv") in one_line_error(info)


@pytest.mark.parametrize("damage", ["html", "truncated", "garbage", "wrong-keys"])
def test_a_damaged_pickle_names_the_file(mini_root: Path, tmp_path: Path, damage: str) -> None:
    path = mini_root / "mini-imagenet-cache-test.pkl"
    data = path.read_bytes()
    path.write_bytes(
        {
            "html": b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning"
            b"</title></head><body>Google Drive can't scan this file for viruses.</body></html>",
            "truncated": data[: len(data) // 2],
            "garbage": b"PK\x03\x04 not a pickle at all",
            "wrong-keys": pickle.dumps({"data": np.zeros((1, 2, 2, 3), np.uint8), "labels": [0]}),
        }[damage]
    )
    with pytest.raises(DataError) as info:
        make(mini_root, tmp_path / "cache", format="pickle").classes("train")
    message = one_line_error(info)
    assert message.startswith(str(path))
    if damage == "html":
        assert "is an HTML page" in message and "not a pickle" in message
    if damage == "wrong-keys":
        assert "'image_data'" in message


def test_a_truncated_jpeg_names_the_file(mini_root: Path, tmp_path: Path) -> None:
    jpeg = mini_root / "images" / f"{SUBSET['train'][2]}00000004.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    with pytest.raises(DataError) as info:
        make(mini_root, tmp_path / "cache", format="images").classes("train")
    assert one_line_error(info).startswith(f"{jpeg} is not a readable image")


def test_pickles_may_not_run_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"image_data": os.getcwd, "class_dict": {}}))
    with pytest.raises(DataError) as info:
        load_numpy_pickle(path)
    assert "refusing to load" in one_line_error(info) and "getcwd" in str(info.value)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"format": "hdf5"}, "dataset.format"),
        ({"download": True}, "dataset.download"),
        ({"image_size": 0}, "dataset.image_size"),
    ],
)
def test_invalid_options_fail_at_construction(tmp_path: Path, options: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        MiniImageNet(str(tmp_path / "mini"), **options)
    assert info.value.key == key and "\n" not in str(info.value)
    if key == "dataset.download":
        assert str(tmp_path / "mini" / "mini-imagenet-cache-train.pkl") in str(info.value)
