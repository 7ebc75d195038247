"""CUB-200-2011: the split of Chen et al. (2019), the official layout, boxes, caching, errors.

The tests write a tiny ``CUB_200_2011/`` in the official layout: real JPEG files in twelve of the
200 real class folders, with ``images.txt`` and ``bounding_boxes.txt`` in the official format.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tarfile
from collections.abc import Callable
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from metarun.data import cub as cub_module
from metarun.data.cub import CUB
from metarun.data.episodes import EpisodeSpec
from metarun.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_data_cache")

SPLITS = ("train", "val", "test")
# The first twelve official class folders: six train, three val, three test classes.
CLASSES = [
    "001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
    "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet", "007.Parakeet_Auklet",
    "008.Rhinoceros_Auklet", "009.Brewer_Blackbird", "010.Red_winged_Blackbird",
    "011.Rusty_Blackbird", "012.Yellow_headed_Blackbird",
]  # fmt: skip
PER_CLASS = 4
RED, BLUE = (220, 30, 30), (30, 30, 220)


def write_cub(root: Path, classes: list[str] = CLASSES, per_class: int = PER_CLASS) -> Path:
    """``root/CUB_200_2011`` with JPEGs of varied sizes: red, with a blue bird in its box."""
    folder = root / "CUB_200_2011"
    rng = random.Random(0)
    lines, boxes = [], []
    image_id = 0
    for name in classes:
        species = name.split(".", 1)[1]
        for n in range(per_class):
            image_id += 1
            width, height = rng.randint(40, 64), rng.randint(40, 64)
            x, y = rng.randint(0, 10), rng.randint(0, 10)
            w, h = rng.randint(16, width - x), rng.randint(16, height - y)
            image = Image.new("RGB", (width, height), RED)
            image.paste(Image.new("RGB", (w, h), BLUE), (x, y))
            relative = f"{name}/{species}_{n + 1:04d}_{100 + image_id}.jpg"
            (folder / "images" / name).mkdir(parents=True, exist_ok=True)
            image.save(folder / "images" / relative, quality=95)
            lines.append(f"{image_id} {relative}")
            boxes.append(f"{image_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    (folder / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return root


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cub(tmp_path_factory.mktemp("cub"))


@pytest.fixture
def make(cub_root: Path, data_cache_dir: Path) -> Callable[..., CUB]:
    def build(**overrides: object) -> CUB:
        options: dict = {"root": str(cub_root), "cache_dir": str(data_cache_dir)}
        options.update(overrides)
        return CUB(**options)

    return build


def chen_listing() -> dict[str, list[str]]:
    return json.loads(files("metarun.data").joinpath("splits/cub_chen.json").read_text())


# --------------------------------------------------------------------------- the split


def test_shipped_split_is_chens_100_50_50() -> None:
    listing = chen_listing()
    assert [len(listing[s]) for s in SPLITS] == [100, 50, 50]
    everything = sorted(name for s in SPLITS for name in listing[s])
    assert len(set(everything)) == 200, "a class is listed twice"
    assert [int(name[:3]) for name in everything] == list(range(1, 201))
    # write_CUB_filelist.py: sorted folders, i % 2 == 0 base, i % 4 == 1 val, i % 4 == 3 novel.
    for i, name in enumerate(everything):
        expected = "train" if i % 2 == 0 else "val" if i % 4 == 1 else "test"
        assert name in listing[expected]
    assert everything[: len(CLASSES)] == CLASSES
    assert "141.Artic_Tern" in everything  # the official folder's spelling
    assert everything[-1] == "200.Common_Yellowthroat"


def test_splits_of_the_sample(make: Callable[..., CUB]) -> None:
    cub = make()
    names = {split: cub.classes(split).names for split in SPLITS}
    assert names["train"] == CLASSES[0::2]
    assert names["val"] == [CLASSES[1], CLASSES[5], CLASSES[9]]
    assert names["test"] == [CLASSES[3], CLASSES[7], CLASSES[11]]
    for split in SPLITS:
        classes = cub.classes(split)
        assert classes.counts.tolist() == [PER_CLASS] * classes.num_classes
        assert classes.images.shape == (PER_CLASS * classes.num_classes, 3, 84, 84)
        assert classes.images.dtype == torch.uint8
    assert cub.task.input_shape == (3, 84, 84)


def test_images_are_decoded_in_file_order(make: Callable[..., CUB], cub_root: Path) -> None:
    cub = make()
    classes = cub.classes("val")
    folder = cub_root / "CUB_200_2011" / "images" / CLASSES[5]
    jpgs = sorted(folder.glob("*.jpg"))
    start = int(classes.offsets[classes.names.index(CLASSES[5])])
    for position, jpg in enumerate(jpgs):
        with Image.open(jpg) as image:
            expected = cub.image_format.encode(image)
        assert torch.equal(classes.images[start + position], expected)
    # Whole images: mostly red around a blue bird.
    pixels = classes.images.float().mean(dim=(0, 2, 3))
    assert pixels[0] > pixels[2]


def test_bounding_box_crop_keeps_the_bird(make: Callable[..., CUB]) -> None:
    cropped = make(bounding_box_crop=True).classes("train").images.float()
    # JPEG blurs the box edge a little; inside it the image is blue.
    mean = cropped.mean(dim=(0, 2, 3))
    assert mean[2] > 180 and mean[0] < 60
    whole = make().classes("train").images.float().mean(dim=(0, 2, 3))
    assert whole[0] > mean[0] + 50


def test_a_five_way_episode(make: Callable[..., CUB]) -> None:
    cub = make(image_size=32)
    sampler = cub.sampler("train", EpisodeSpec(5, 1, 3))
    batch = sampler.gather(sampler.draw(2, torch.Generator().manual_seed(0)))
    assert batch.support_x.shape == (2, 5, 3, 32, 32)
    assert batch.query_x.shape == (2, 15, 3, 32, 32)
    assert batch.query_y.tolist() == [[c for c in range(5) for _ in range(3)]] * 2
    norm = cub.normalization
    assert norm is not None and len(norm.mean) == 3


def test_augmentation_flips_and_crops(make: Callable[..., CUB]) -> None:
    cub = make(image_size=32, augment={"flip": True, "crop_padding": 8})
    sampler = cub.sampler("train", EpisodeSpec(5, 1, 3))
    plan = sampler.draw(3, torch.Generator().manual_seed(5))
    assert plan.shape == (3, 5, 4, 4)
    batch = sampler.gather(plan)
    norm = cub.normalization
    assert norm is not None
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (norm.mean, norm.std))
    raw = (batch.support_x * std + mean).mul(255).round().to(torch.uint8).flatten(0, 1)
    stored = cub.classes("train").images
    flips = 0
    for (index, flipped, row, col), got in zip(plan[:, :, 0].reshape(-1, 4), raw, strict=True):
        padded = torch.nn.functional.pad(stored[index], (8, 8, 8, 8))
        expected = padded[:, row : row + 32, col : col + 32]
        assert torch.equal(got, expected.flip(-1) if flipped else expected)
        flips += int(flipped)
    assert 0 < flips < 15
    assert cub.sampler("test", EpisodeSpec(3, 1, 1)).draw(1, torch.Generator()).dim() == 3


def test_without_images_txt_the_folders_are_scanned(tmp_path: Path) -> None:
    root = write_cub(tmp_path / "data", CLASSES[:4], per_class=2)
    (root / "CUB_200_2011" / "images.txt").unlink()
    cub = CUB(str(root), image_size=16, cache_dir=str(tmp_path / "cache"))
    assert cub.classes("train").names == [CLASSES[0], CLASSES[2]]
    assert cub.classes("test").counts.tolist() == [2]
    with pytest.raises(DataError) as info:
        CUB(
            str(root), image_size=16, bounding_box_crop=True, cache_dir=str(tmp_path / "cache")
        ).classes("train")
    assert str(root / "CUB_200_2011" / "images.txt") in str(info.value)


# --------------------------------------------------------------------------- the cache


def test_the_cache_follows_files_and_options(tmp_path: Path) -> None:
    root = write_cub(tmp_path / "data", CLASSES[:4], per_class=2)
    cache = tmp_path / "cache"
    first = CUB(str(root), image_size=16, cache_dir=str(cache)).classes("train").images.clone()
    assert len(list(cache.glob("cub-*.pt"))) == 1
    CUB(str(root), image_size=16, cache_dir=str(cache)).classes("train")
    assert len(list(cache.glob("cub-*.pt"))) == 1, "a current cache is rebuilt"
    CUB(str(root), image_size=20, cache_dir=str(cache)).classes("train")
    CUB(str(root), image_size=16, bounding_box_crop=True, cache_dir=str(cache)).classes("train")
    assert len(list(cache.glob("cub-*.pt"))) == 3

    jpg = sorted((root / "CUB_200_2011" / "images" / CLASSES[0]).glob("*.jpg"))[0]
    Image.new("RGB", (50, 50), (0, 255, 0)).save(jpg)
    stat = jpg.stat()
    os.utime(jpg, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = CUB(str(root), image_size=16, cache_dir=str(cache)).classes("train").images
    assert len(list(cache.glob("cub-*.pt"))) == 4
    assert torch.equal(again[1:], first[1:])
    assert int(again[0, 1].float().mean()) > 240 and not torch.equal(again[0], first[0])


# --------------------------------------------------------------------------- errors


def test_missing_data_without_download(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        CUB(str(root), download=False, cache_dir=str(tmp_path / "c")).classes("train")
    message = str(info.value)
    assert "\n" not in message
    assert str(root / "CUB_200_2011" / "images") in message
    assert "data.caltech.edu" in message and "dataset.download" in message
    assert not root.exists()


def test_a_listed_image_that_is_missing_is_named(tmp_path: Path) -> None:
    root = write_cub(tmp_path / "data", CLASSES[:4], per_class=2)
    gone = sorted((root / "CUB_200_2011" / "images" / CLASSES[2]).glob("*.jpg"))[1]
    gone.unlink()
    with pytest.raises(DataError) as info:
        CUB(str(root), cache_dir=str(tmp_path / "c")).classes("train")
    assert str(gone) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupted_jpeg_is_named(tmp_path: Path, damage: str) -> None:
    root = write_cub(tmp_path / "data", CLASSES[:4], per_class=2)
    bad = sorted((root / "CUB_200_2011" / "images" / CLASSES[1]).glob("*.jpg"))[0]
    data = bad.read_bytes()
    bad.write_bytes(
        {"garbage": b"\xff\xd8 not a jpeg" * 20, "truncated": data[:200], "empty": b""}[damage]
    )
    with pytest.raises(DataError) as info:
        CUB(str(root), image_size=16, cache_dir=str(tmp_path / "c")).classes("train")
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_an_unofficial_class_folder_is_named(tmp_path: Path) -> None:
    root = write_cub(tmp_path / "data", [*CLASSES[:4], "201.Dodo"], per_class=1)
    with pytest.raises(DataError) as info:
        CUB(str(root), image_size=16, cache_dir=str(tmp_path / "c")).classes("train")
    assert str(root / "CUB_200_2011" / "images" / "201.Dodo") in str(info.value)


@pytest.mark.parametrize("table", ["images.txt", "bounding_boxes.txt"])
def test_a_malformed_table_is_named(tmp_path: Path, table: str) -> None:
    root = write_cub(tmp_path / "data", CLASSES[:4], per_class=1)
    path = root / "CUB_200_2011" / table
    path.write_text(path.read_text() + "5 only-two-fields extra extra extra extra\n")
    with pytest.raises(DataError) as info:
        CUB(str(root), bounding_box_crop=True, cache_dir=str(tmp_path / "c")).classes("train")
    assert str(path) in str(info.value) and "line 5" in str(info.value)


# --------------------------------------------------------------------------- download


def official_like_archive(tmp_path: Path, target: Path) -> str:
    """A .tgz laid out like CUB_200_2011.tgz (the folder plus attributes.txt); its SHA-256."""
    source = write_cub(tmp_path / "source", CLASSES[:4], per_class=2)
    (source / "attributes.txt").write_text("1 has_bill_shape::curved_(up_or_down)\n")
    with tarfile.open(target, "w:gz") as tar:
        tar.add(source / "CUB_200_2011", arcname="CUB_200_2011")
        tar.add(source / "attributes.txt", arcname="attributes.txt")
    return hashlib.sha256(target.read_bytes()).hexdigest()


def test_download_verifies_and_unpacks_the_archive(
    tmp_path: Path, served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, directory = served
    digest = official_like_archive(tmp_path, directory / "CUB_200_2011.tgz")
    archive = replace(cub_module.ARCHIVE, urls=(f"{url}/CUB_200_2011.tgz",), sha256=digest)
    monkeypatch.setattr(cub_module, "ARCHIVE", archive)
    root = tmp_path / "data"
    cub = CUB(str(root), download=True, image_size=16, cache_dir=str(tmp_path / "c"))
    assert cub.classes("train").names == [CLASSES[0], CLASSES[2]]
    assert (root / "CUB_200_2011" / "bounding_boxes.txt").is_file()
    assert not (root / "CUB_200_2011.tgz").exists(), "the archive is deleted once unpacked"


def test_download_with_a_wrong_checksum_is_refused(
    tmp_path: Path, served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, directory = served
    official_like_archive(tmp_path, directory / "CUB_200_2011.tgz")
    archive = replace(cub_module.ARCHIVE, urls=(f"{url}/CUB_200_2011.tgz",))
    monkeypatch.setattr(cub_module, "ARCHIVE", archive)
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        CUB(str(root), download=True, cache_dir=str(tmp_path / "c")).classes("train")
    assert "SHA-256" in str(info.value) and "\n" not in str(info.value)
    assert not (root / "CUB_200_2011").exists()


def test_the_official_archive() -> None:
    archive = cub_module.ARCHIVE
    assert archive.filename == "CUB_200_2011.tgz" and archive.folder == "CUB_200_2011"
    assert archive.urls[0].startswith("https://data.caltech.edu/records/65de6-vp158/")
    assert len(archive.sha256) == 64 and int(archive.sha256, 16) >= 0


# --------------------------------------------------------------------------- config


def test_config_builds_cub(compose_config, tmp_path: Path) -> None:
    config = compose_config(["dataset=cub", f"dataset.root={tmp_path}"])
    cub = instantiate(config.dataset)
    assert type(cub) is CUB
    assert cub.task.input_shape == (3, 84, 84) and cub.bounding_box_crop is False
    assert (cub.episodes.ways, cub.episodes.shots, cub.episodes.queries) == (5, 1, 15)
    assert not list(tmp_path.iterdir()), "constructing reads nothing"
