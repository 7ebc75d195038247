"""tieredImageNet: the authors' PNG pickles and npz archives, categories, checks and errors.

The files are tiny versions of the real ones: a list of PNG byte arrays shaped like OpenCV's
``imencode`` output, label dicts with the real four keys, an npz with key ``images`` in BGR.
"""

from __future__ import annotations

import io
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
from metarun.data.tiered_imagenet import TieredImageNet, ren_split
from metarun.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_data_cache")

SPLITS = ("train", "val", "test")
OFFICIAL = ren_split()
SIZE = 10
PER_CLASS = 3


def subset(split: str, categories: int, classes: int) -> dict[str, list[str]]:
    chosen = list(OFFICIAL[split])[:categories]
    return {category: OFFICIAL[split][category][:classes] for category in chosen}


# 2 training categories of 3 classes (5-way episodes), 1 validation, 2 test categories of 2.
LAYOUT = {"train": subset("train", 2, 3), "val": subset("val", 1, 2), "test": subset("test", 2, 2)}


def rgb_image(seed: int) -> np.ndarray:
    rng = random.Random(seed)
    return np.array(
        [[[rng.randrange(256) for _ in range(3)] for _ in range(SIZE)] for _ in range(SIZE)],
        dtype=np.uint8,
    )


def png_bytes(pixels: np.ndarray) -> np.ndarray:
    """PNG bytes as OpenCV's imencode returns them: a uint8 array of shape [n, 1]."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8).reshape(-1, 1).copy()


def write_split(
    root: Path, split: str, layout: dict[str, list[str]], seed: int = 0,
    names: dict[str, str] | None = None, npz: bool = True,
) -> dict[str, np.ndarray]:  # fmt: skip
    """``{split}_images_png.pkl``, ``{split}_images.npz`` (BGR) and ``{split}_labels.pkl``.

    Images are interleaved across classes, as nothing in the format promises an order.
    ``names`` renames wnids (human-readable labels). Returns ``{class: RGB images}``.
    """
    names = names or {}
    specific_str, general_str, entries = [], [], []
    for category, wnids in layout.items():
        general_str.append(names.get(category, category))
        for wnid in wnids:
            specific_str.append(names.get(wnid, wnid))
            for i in range(PER_CLASS):
                entries.append((len(specific_str) - 1, len(general_str) - 1, i))
    random.Random(seed).shuffle(entries)
    pixels = [rgb_image(seed * 1000 + c * 10 + i) for c, _, i in entries]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{split}_images_png.pkl", "wb") as handle:
        pickle.dump([png_bytes(p) for p in pixels], handle, protocol=2)
    if npz:
        np.savez(root / f"{split}_images.npz", images=np.stack(pixels)[..., ::-1])
    labels = {
        "label_specific": np.array([c for c, _, _ in entries], dtype=np.int32),
        "label_general": np.array([g for _, g, _ in entries], dtype=np.int32),
        "label_specific_str": specific_str,
        "label_general_str": general_str,
    }
    with open(root / f"{split}_labels.pkl", "wb") as handle:
        pickle.dump(labels, handle, protocol=2)
    by_class: dict[str, list[np.ndarray]] = {}
    for (c, _, _), image in zip(entries, pixels, strict=True):
        by_class.setdefault(specific_str[c], []).append(image)
    return {name: np.stack(images) for name, images in by_class.items()}


def write_tiered(root: Path, layout=LAYOUT, **kwargs) -> dict[str, dict[str, np.ndarray]]:
    return {
        split: write_split(root, split, layout[split], seed=n, **kwargs)
        for n, split in enumerate(SPLITS)
    }


@pytest.fixture
def tiered_root(tmp_path: Path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    root = tmp_path / "tiered"
    return root, write_tiered(root)


def make(root: Path, cache: Path, **options) -> TieredImageNet:
    return TieredImageNet(str(root), image_size=SIZE, cache_dir=str(cache), **options)


def one_line_error(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- the shipped split


def test_shipped_split_is_351_97_160_in_20_6_8() -> None:
    classes = {s: [w for ws in OFFICIAL[s].values() for w in ws] for s in SPLITS}
    assert {s: len(classes[s]) for s in SPLITS} == {"train": 351, "val": 97, "test": 160}
    assert {s: len(OFFICIAL[s]) for s in SPLITS} == {"train": 20, "val": 6, "test": 8}
    every = [w for s in SPLITS for w in classes[s]]
    assert len(every) == len(set(every)) == 608
    categories = [c for s in SPLITS for c in OFFICIAL[s]]
    assert len(categories) == len(set(categories)) == 34
    assert OFFICIAL["train"]["n01524359"][0] == "n01530575"  # passerines, first in Ren's csv
    assert len(OFFICIAL["test"]["n15046900"]) == 22


# --------------------------------------------------------------------------- reading


def test_png_pickles_load_grouped_by_category(tiered_root, tmp_path: Path) -> None:
    root, written = tiered_root
    tiered = make(root, tmp_path / "cache")
    for split in SPLITS:
        classes = tiered.classes(split)
        expected = [f"{c}/{w}" for c, wnids in LAYOUT[split].items() for w in wnids]
        assert classes.names == expected
        assert classes.groups == [name.split("/")[0] for name in expected]
        assert classes.counts.tolist() == [PER_CLASS] * len(expected)
        assert classes.images.shape == (PER_CLASS * len(expected), 3, SIZE, SIZE)
        for index, name in enumerate(classes.names):
            start = int(classes.offsets[index])
            rows = classes.images[start : start + PER_CLASS].permute(0, 2, 3, 1).numpy()
            assert np.array_equal(rows, written[split][name.split("/")[1]])


def test_npz_gives_the_same_tensors_as_the_png_pickles(tiered_root, tmp_path: Path) -> None:
    root, _ = tiered_root
    png = make(root, tmp_path / "cache", format="png")
    npz = make(root, tmp_path / "cache", format="npz")
    for split in SPLITS:
        assert png.classes(split).names == npz.classes(split).names
        assert torch.equal(png.classes(split).images, npz.classes(split).images)

    # An npz written in RGB order reads the same with npz_channel_order=rgb, not with bgr.
    for split in SPLITS:
        with np.load(root / f"{split}_images.npz") as archive:
            bgr = archive["images"]
        np.savez(root / f"{split}_images.npz", images=bgr[..., ::-1])
    rgb = make(root, tmp_path / "cache", format="npz", npz_channel_order="rgb")
    assert torch.equal(rgb.classes("val").images, png.classes("val").images)
    swapped = make(root, tmp_path / "cache", format="npz")
    assert not torch.equal(swapped.classes("val").images, png.classes("val").images)


def test_resizing_matches_between_formats(tiered_root, tmp_path: Path) -> None:
    root, _ = tiered_root
    options = {"image_size": 16, "cache_dir": str(tmp_path / "cache")}
    png = TieredImageNet(str(root), format="png", **options).classes("test")
    npz = TieredImageNet(str(root), format="npz", **options).classes("test")
    assert png.images.shape[1:] == (3, 16, 16) and torch.equal(png.images, npz.images)


def test_human_readable_labels_and_python2_keys(tmp_path: Path) -> None:
    root = tmp_path / "tiered"
    names = {"n01524359": "passerine, passeriform bird", "n01530575": "brambling/finch"}
    write_tiered(root, names=names, npz=False)
    labels = root / "train_labels.pkl"
    with open(labels, "rb") as handle:
        data = pickle.load(handle)
    with open(labels, "wb") as handle:  # keys as bytes, as some Python 2 pickles have them
        pickle.dump({key.encode(): value for key, value in data.items()}, handle)
    train = make(root, tmp_path / "cache").classes("train")
    assert train.names[0] == "passerine, passeriform bird/brambling-finch"
    assert train.groups[:3] == ["passerine, passeriform bird"] * 3


def test_counts_other_than_the_papers_are_reported(tiered_root, tmp_path, caplog) -> None:
    root, _ = tiered_root
    with caplog.at_level(logging.WARNING, logger="metarun.data.tiered_imagenet"):
        make(root, tmp_path / "cache").classes("train")
    assert "6 classes in 2 categories" in caplog.text and "351 in 20" in caplog.text
    assert "a subset or another version" in caplog.text


def test_sampler_draws_5_way_and_within_category_episodes(tiered_root, tmp_path) -> None:
    root, _ = tiered_root
    tiered = make(root, tmp_path / "cache", ways=5, shots=1, queries=2)
    sampler = tiered.sampler("train", tiered.episodes)
    batch = sampler.gather(sampler.draw(3, torch.Generator().manual_seed(0)))
    assert batch.support_x.shape == (3, 5, 3, SIZE, SIZE)
    assert batch.query_x.shape == (3, 10, 3, SIZE, SIZE)

    grouped = make(root, tmp_path / "cache", within_group=True)
    classes = grouped.classes("train")
    sampler = grouped.sampler("train", EpisodeSpec(3, 1, 1))
    plan = sampler.draw(20, torch.Generator().manual_seed(1))
    class_of_row = torch.repeat_interleave(torch.arange(classes.num_classes), classes.counts)
    groups = classes.group_index[class_of_row[plan]]  # [episodes, ways, shots + queries]
    assert bool((groups == groups[:, :1, :1]).all()), "an episode mixed categories"
    assert len(set(groups[:, 0, 0].tolist())) == 2, "one category was never drawn"


# --------------------------------------------------------------------------- checks


def test_a_class_of_another_split_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "tiered"
    layout = dict(LAYOUT)
    category, wnids = next(iter(LAYOUT["train"].items()))
    layout["train"] = {category: [*wnids, OFFICIAL["val"]["n02098550"][0]]}
    write_tiered(root, layout, npz=False)
    with pytest.raises(DataError) as info:
        make(root, tmp_path / "cache").classes("train")
    message = one_line_error(info)
    assert str(root / "train_labels.pkl") in message and "n02099267" in message


def test_a_category_in_two_splits_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "tiered"
    layout = {
        "train": {"dogs": ["beagle", "boxer"]},
        "val": {"cats": ["tabby"]},
        "test": {"dogs": ["pug"]},
    }
    write_tiered(root, layout, npz=False)
    with pytest.raises(DataError) as info:
        make(root, tmp_path / "cache").classes("train")
    message = one_line_error(info)
    assert "category 'dogs' is also in the train split" in message
    assert str(root / "test_labels.pkl") in message


# --------------------------------------------------------------------------- the cache


def test_a_changed_file_rebuilds_the_cache(tiered_root, tmp_path: Path) -> None:
    root, _ = tiered_root
    cache = tmp_path / "cache"
    before = make(root, cache).classes("val").images.clone()
    entries = set(cache.iterdir())
    assert torch.equal(make(root, cache).classes("val").images, before)
    assert set(cache.iterdir()) == entries

    path = root / "val_images_png.pkl"
    with open(path, "rb") as handle:
        encoded = pickle.load(handle)
    labels = pickle.loads((root / "val_labels.pkl").read_bytes())
    first_of_class_0 = int(np.flatnonzero(labels["label_specific"] == 0)[0])
    encoded[first_of_class_0] = png_bytes(np.zeros((SIZE, SIZE, 3), np.uint8))
    path.write_bytes(pickle.dumps(encoded, protocol=2))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = make(root, cache).classes("val").images
    assert int(after[0].max()) == 0 and int(before[0].max()) > 0
    assert torch.equal(after[1:], before[1:])


# --------------------------------------------------------------------------- errors


def test_missing_files_are_listed(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        make(root, tmp_path / "cache").classes("train")
    message = one_line_error(info)
    assert (
        str(root / "train_images_png.pkl") in message and str(root / "train_images.npz") in message
    )
    for split in SPLITS:
        assert str(root / f"{split}_images_png.pkl") in message
        assert f"{split}_labels.pkl" in message
    assert not root.exists()


def test_missing_labels_are_named(tiered_root, tmp_path: Path) -> None:
    root, _ = tiered_root
    (root / "test_labels.pkl").unlink()
    with pytest.raises(DataError) as info:
        make(root, tmp_path / "cache").classes("train")
    assert one_line_error(info).startswith(f"{root / 'test_labels.pkl'} is missing")


@pytest.mark.parametrize("damage", ["html-pickle", "bad-png", "truncated-npz", "short-labels"])
def test_damaged_files_are_named(tiered_root, tmp_path: Path, damage: str) -> None:
    root, _ = tiered_root
    options: dict = {}
    if damage == "html-pickle":
        path = root / "val_images_png.pkl"
        path.write_text("<!DOCTYPE html><html><body>Google Drive - Virus scan warning</body>")
        expected = f"{path} is an HTML page"
    elif damage == "bad-png":
        path = root / "val_images_png.pkl"
        encoded = pickle.loads(path.read_bytes())
        encoded[4] = encoded[4][:30]
        path.write_bytes(pickle.dumps(encoded))
        expected = f"{path} image 4 is not a readable image"
    elif damage == "truncated-npz":
        path = root / "val_images.npz"
        path.write_bytes(path.read_bytes()[:100])
        options = {"format": "npz"}
        expected = f"{path} is not a readable npz archive"
    else:
        path = root / "val_labels.pkl"
        labels = pickle.loads(path.read_bytes())
        labels["label_specific"] = labels["label_specific"][:-1]
        labels["label_general"] = labels["label_general"][:-1]
        path.write_bytes(pickle.dumps(labels))
        expected = f"{root / 'val_images_png.pkl'} holds 6 images but {path} labels 5"
    with pytest.raises(DataError) as info:
        make(root, tmp_path / "cache", **options).classes("train")
    assert one_line_error(info).startswith(expected)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"format": "jpeg"}, "dataset.format"),
        ({"npz_channel_order": "gbr"}, "dataset.npz_channel_order"),
        ({"workers": 0}, "dataset.workers"),
        ({"download": True}, "dataset.download"),
    ],
)
def test_invalid_options_fail_at_construction(tmp_path: Path, options: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        TieredImageNet(str(tmp_path / "tiered"), **options)
    assert info.value.key == key and "\n" not in str(info.value)
