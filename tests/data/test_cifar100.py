"""CIFAR-100 and the two few-shot sets built from it: CIFAR-FS and FC100.

The tests write a tiny ``cifar-100-python/`` in the real format: the pickles ``train``, ``test``
and ``meta`` as Python 2 wrote them (str keys and names are Python 2 byte strings, so
``encoding="latin1"`` reads them as str and ``encoding="bytes"`` as bytes), with the real keys,
the real 100 class names and superclasses, and four images per class instead of 600.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import struct
import tarfile
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from metarun.data import cifar100 as cifar100_module
from metarun.data.cifar100 import decode_cifar100
from metarun.data.cifar_fs import CIFARFS
from metarun.data.episodes import EpisodeSpec
from metarun.data.fc100 import FC100
from metarun.data.images import ImageFormat
from metarun.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_data_cache")

SPLITS = ("train", "val", "test")
# CIFAR-100's superclasses and their classes, as its meta file names them (both alphabetical).
HIERARCHY = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
FINE = sorted(name for members in HIERARCHY.values() for name in members)
COARSE = sorted(HIERARCHY)
SUPERCLASS = {name: sup for sup, members in HIERARCHY.items() for name in members}
TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 1
# TADAM's superclass indices (Oreshkin et al. 2018, section 4).
FC100_INDICES = {
    "train": [1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19],
    "val": [8, 11, 13, 16],
    "test": [0, 7, 12, 14],
}


# --------------------------------------------------------------------------- the fixture


class Python2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes ``bytes`` as Python 2 ``str`` (BINSTRING opcodes), as CIFAR's pickles hold them."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def write_python2_pickle(path: Path, entry: dict) -> None:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(entry)
    path.write_bytes(buffer.getvalue())


def pixels_of(fine: int, part: str, index: int) -> np.ndarray:
    """A seeded image whose first bytes say its class, file and position."""
    rng = np.random.default_rng(1000 * fine + 10 * PARTS_CODE[part] + index)
    row = rng.integers(0, 256, 3072, dtype=np.uint8)
    row[:3] = (fine, PARTS_CODE[part], index)
    return row


PARTS_CODE = {"train": 1, "test": 2}


def write_cifar100(
    root: Path, superclass: dict[str, str] | None = None, per_class: dict | None = None
) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` in the real format, a few images a class."""
    superclass = superclass or SUPERCLASS
    per_class = per_class or {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS}
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part, count in per_class.items():
        # Interleaved classes, as in the real files.
        order = [(f, i) for i in range(count) for f in range(100)]
        write_python2_pickle(
            folder / part,
            {
                b"filenames": [f"{FINE[f]}_s_{i:06d}.png".encode() for f, i in order],
                b"batch_label": f"{part}ing batch 1 of 1".encode(),
                b"fine_labels": [f for f, _ in order],
                b"coarse_labels": [COARSE.index(superclass[FINE[f]]) for f, _ in order],
                b"data": np.stack([pixels_of(f, part, i) for f, i in order]),
            },
        )
    write_python2_pickle(
        folder / "meta",
        {
            b"fine_label_names": [n.encode() for n in FINE],
            b"coarse_label_names": [n.encode() for n in COARSE],
        },
    )
    return root


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar100"))


@pytest.fixture
def make(cifar_root: Path, data_cache_dir: Path) -> Callable[..., CIFARFS | FC100]:
    """``make(CIFARFS, **overrides)`` over the shared tiny CIFAR-100."""

    def build(kind: type, **overrides: object):
        options: dict = {"root": str(cifar_root), "cache_dir": str(data_cache_dir)}
        options.update(overrides)
        return kind(**options)

    return build


def split_file(name: str) -> dict:
    return json.loads(files("metarun.data").joinpath(f"splits/{name}").read_text())


# --------------------------------------------------------------------------- shipped splits


def test_the_fixture_is_in_cifars_python2_format(cifar_root: Path) -> None:
    with open(cifar_root / "cifar-100-python" / "train", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    assert set(raw) == {b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"}
    assert raw[b"data"].dtype == np.uint8 and raw[b"data"].shape == (300, 3072)
    with open(cifar_root / "cifar-100-python" / "meta", "rb") as handle:
        meta = pickle.load(handle, encoding="latin1")  # how torchvision reads it
    assert meta["fine_label_names"] == FINE and len(FINE) == len(set(FINE)) == 100
    assert meta["coarse_label_names"] == COARSE and len(COARSE) == 20


def test_cifar_fs_split_is_64_16_20_of_the_100_classes() -> None:
    listing = split_file("cifar_fs_bertinetto.json")
    sizes = [len(listing[s]) for s in SPLITS]
    assert sizes == [64, 16, 20]
    sets = [set(listing[s]) for s in SPLITS]
    assert sum(len(s) for s in sets) == 100, "a class is listed twice"
    assert sets[0] | sets[1] | sets[2] == set(FINE)
    assert sets[1] == {
        "beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly",
        "sea", "camel", "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor",
    }  # fmt: skip
    assert sets[2] == {
        "whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe",
        "leopard", "plain", "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman",
        "bicycle", "pickup_truck", "rocket",
    }  # fmt: skip


def test_fc100_split_is_12_4_4_superclasses_of_60_20_20_classes() -> None:
    listing = split_file("fc100_oreshkin.json")
    assert [len(listing[s]) for s in SPLITS] == [12, 4, 4]
    for split in SPLITS:
        assert sorted(COARSE.index(sup) for sup in listing[split]) == FC100_INDICES[split]
        for sup, members in listing[split].items():
            assert members == HIERARCHY[sup], f"{sup} does not hold CIFAR-100's classes"
    classes = [{c for members in listing[s].values() for c in members} for s in SPLITS]
    assert [len(c) for c in classes] == [60, 20, 20]
    assert classes[0] | classes[1] | classes[2] == set(FINE)


# --------------------------------------------------------------------------- reading


def test_decode_reads_all_classes_in_order(cifar_root: Path, data_cache_dir: Path) -> None:
    classes = decode_cifar100(
        cifar_root / "cifar-100-python", ImageFormat(32, channels=3), data_cache_dir
    )
    assert classes.names == [f"{SUPERCLASS[f]}/{f}" for f in FINE]
    assert classes.counts.tolist() == [TRAIN_PER_CLASS + TEST_PER_CLASS] * 100
    assert classes.images.dtype == torch.uint8
    assert classes.images.shape == (400, 3, 32, 32)
    for fine in (0, 57, 99):
        start = int(classes.offsets[fine])
        rows = classes.images[start : start + 4].flatten(1)
        expected = [pixels_of(fine, "train", i) for i in range(3)] + [pixels_of(fine, "test", 0)]
        assert torch.equal(rows, torch.from_numpy(np.stack(expected)))
    # Channel-major rows: the first 1024 bytes are the red plane.
    first = classes.images[0]
    assert torch.equal(first[0].flatten(), torch.from_numpy(pixels_of(0, "train", 0)[:1024]))


def test_cifar_fs_splits(make: Callable) -> None:
    dataset = make(CIFARFS)
    listing = split_file("cifar_fs_bertinetto.json")
    for split, size in zip(SPLITS, (64, 16, 20), strict=True):
        classes = dataset.classes(split)
        assert classes.num_classes == size
        assert [n.split("/", 1)[1] for n in classes.names] == listing[split]
        assert all(n == f"{SUPERCLASS[n.split('/')[1]]}/{n.split('/')[1]}" for n in classes.names)
        assert classes.images.shape == (4 * size, 3, 32, 32)
    assert dataset.task.input_shape == (3, 32, 32)


def test_fc100_splits_follow_the_superclasses(make: Callable) -> None:
    dataset = make(FC100)
    listing = split_file("fc100_oreshkin.json")
    for split, size in zip(SPLITS, (60, 20, 20), strict=True):
        classes = dataset.classes(split)
        assert classes.num_classes == size
        assert set(classes.groups) == set(listing[split])
        assert classes.images.shape[0] == 4 * size


def test_within_group_fc100_episodes_stay_in_one_superclass(make: Callable) -> None:
    dataset = make(FC100, within_group=True)
    sampler = dataset.sampler("test", EpisodeSpec(5, 1, 2))
    plan = sampler.draw(20, torch.Generator().manual_seed(0))
    classes = dataset.classes("test")
    for episode in plan:
        rows = episode[:, 0]
        names = {
            classes.names[int(torch.searchsorted(classes.offsets, r, right=True)) - 1] for r in rows
        }
        assert len({n.split("/")[0] for n in names}) == 1 and len(names) == 5


def test_a_five_way_episode(make: Callable) -> None:
    dataset = make(CIFARFS)
    sampler = dataset.sampler("test", EpisodeSpec(5, 1, 3))
    batch = sampler.gather(sampler.draw(2, torch.Generator().manual_seed(1)))
    assert batch.support_x.shape == (2, 5, 3, 32, 32)
    assert batch.query_x.shape == (2, 15, 3, 32, 32)
    assert batch.support_y.tolist() == [[0, 1, 2, 3, 4]] * 2
    assert batch.support_x.dtype == torch.float32
    # Normalised per channel with the training split's statistics.
    norm = dataset.normalization
    train = dataset.classes("train").images.to(torch.float64) / 255
    assert norm is not None and len(norm.mean) == 3
    assert norm.mean == pytest.approx(train.mean(dim=(0, 2, 3)).tolist(), abs=1e-5)


def test_augmentation_flips_and_crops_rgb_images(make: Callable) -> None:
    plain = make(CIFARFS)
    flip = make(CIFARFS, augment={"flip": True})
    crop = make(CIFARFS, augment={"flip": True, "crop_padding": 4})
    spec = EpisodeSpec(5, 1, 3)
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    flip_sampler = flip.sampler("train", spec)
    plan = flip_sampler.draw(4, generator())
    assert plan.shape == (4, 5, 4, 4)
    flipped = flip_sampler.gather(plan)
    unflipped = plain.sampler("train", spec).gather(plan[..., 0])
    support, reference = flipped.support_x.flatten(0, 1), unflipped.support_x.flatten(0, 1)
    mirrored = plan[:, :, :1, 1].flatten().bool()
    assert mirrored.any() and (~mirrored).any()
    assert torch.equal(support[mirrored], reference[mirrored].flip(-1))
    assert torch.equal(support[~mirrored], reference[~mirrored])
    # Crops shift the image by up to 4 pixels, filling with zero pixels (before normalising).
    crop_sampler = crop.sampler("train", spec)
    crop_plan = crop_sampler.draw(4, generator())
    cropped = crop_sampler.gather(crop_plan)
    assert cropped.support_x.shape == (4, 5, 3, 32, 32)
    norm = crop.normalization
    assert norm is not None
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (norm.mean, norm.std))
    raw = (cropped.support_x * std + mean).mul(255).round().to(torch.uint8).flatten(0, 1)
    stored = crop.classes("train").images
    checked = 0
    for (index, flipped, row, col), got in zip(crop_plan[:, :, 0].reshape(-1, 4), raw, strict=True):
        padded = torch.nn.functional.pad(stored[index], (4, 4, 4, 4))
        expected = padded[:, row : row + 32, col : col + 32]
        assert torch.equal(got, expected.flip(-1) if flipped else expected)
        checked += int(row != 4 or col != 4)
    assert checked > 0, "no image was shifted"
    # Validation and test episodes are never augmented.
    test_plan = crop.sampler("test", spec).draw(2, generator())
    assert test_plan.dim() == 3


def test_image_size_resizes_once(make: Callable, tmp_path: Path) -> None:
    dataset = make(CIFARFS, image_size=16, cache_dir=str(tmp_path / "cache"))
    classes = dataset.classes("val")
    assert classes.images.shape == (64, 3, 16, 16)
    assert dataset.task.input_shape == (3, 16, 16)
    native = make(CIFARFS).classes("val")
    for row in (0, 37):  # the resize of each stored image, in the right orientation
        image = Image.fromarray(native.images[row].permute(1, 2, 0).numpy())
        assert torch.equal(classes.images[row], ImageFormat(16, channels=3).encode(image))
    small = torch.nn.functional.interpolate(
        native.images.float(), size=(16, 16), mode="bilinear", antialias=True
    )
    # Random pixels do not survive a 2x downsampling, but their average colour does.
    assert torch.allclose(classes.images.float().mean((2, 3)), small.mean((2, 3)), atol=10)


# --------------------------------------------------------------------------- the cache


def test_cifar_fs_and_fc100_share_one_cache(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    CIFARFS(str(cifar_root), cache_dir=str(cache)).classes("train")
    assert len(list(cache.glob("cifar100-*.pt"))) == 1

    def no_reading(path: Path):
        raise AssertionError(f"{path} was read again although the cache is current")

    monkeypatch.setattr(cifar100_module, "read_part", no_reading)
    fc100 = FC100(str(cifar_root), cache_dir=str(cache))
    assert fc100.classes("train").num_classes == 60
    assert len(list(cache.glob("*.pt"))) == 1


def test_a_changed_file_rebuilds_the_cache(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path / "data")
    cache = tmp_path / "cache"
    before = CIFARFS(str(root), cache_dir=str(cache)).classes("test").images.clone()
    folder = root / "cifar-100-python"
    with open(folder / "test", "rb") as handle:
        entry = pickle.load(handle, encoding="bytes")
    entry[b"data"] = 255 - entry[b"data"]
    write_python2_pickle(folder / "test", entry)
    stat = (folder / "test").stat()  # a new mtime even where the clock is coarse
    os.utime(folder / "test", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = CIFARFS(str(root), cache_dir=str(cache)).classes("test").images
    assert len(list(cache.glob("cifar100-*.pt"))) == 2
    per_class = before.view(20, 4, 3, 32, 32)
    again = after.view(20, 4, 3, 32, 32)
    assert torch.equal(again[:, :3], per_class[:, :3]), "the train images did not change"
    assert torch.equal(again[:, 3], 255 - per_class[:, 3])


# --------------------------------------------------------------------------- errors


def test_missing_folder_without_download(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    dataset = CIFARFS(str(root), download=False, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        dataset.classes("train")
    message = str(info.value)
    assert "\n" not in message
    assert str(root / "cifar-100-python") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message
    assert "dataset.download" in message
    assert not root.exists(), "a failed lookup must not create the data directory"


@pytest.mark.parametrize("name", ["train", "test", "meta"])
def test_a_missing_file_is_named(tmp_path: Path, name: str) -> None:
    root = write_cifar100(tmp_path / "data", per_class={"train": 1, "test": 1})
    (root / "cifar-100-python" / name).unlink()
    with pytest.raises(DataError) as info:
        FC100(str(root), cache_dir=str(tmp_path / "cache")).classes("train")
    assert str(root / "cifar-100-python" / name) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not-a-dict", "no-labels"])
def test_a_corrupted_file_is_named(tmp_path: Path, damage: str) -> None:
    root = write_cifar100(tmp_path / "data", per_class={"train": 2, "test": 1})
    bad = root / "cifar-100-python" / "train"
    data = bad.read_bytes()
    if damage == "not-a-dict":
        write_python2_pickle(bad, [1, 2, 3])  # type: ignore[arg-type]
    elif damage == "no-labels":
        entry = pickle.loads(data, encoding="bytes")
        del entry[b"fine_labels"]
        write_python2_pickle(bad, entry)
    else:
        bad.write_bytes(
            {"garbage": b"not a pickle" * 50, "truncated": data[: len(data) // 2], "empty": b""}[
                damage
            ]
        )
    with pytest.raises(DataError) as info:
        CIFARFS(str(root), cache_dir=str(tmp_path / "cache")).classes("train")
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    if damage == "no-labels":
        assert "'fine_labels'" in str(info.value)


def test_superclasses_must_match_the_fc100_split(tmp_path: Path) -> None:
    moved = dict(SUPERCLASS, lobster="insects")  # not what CIFAR-100 says
    root = write_cifar100(tmp_path / "data", superclass=moved, per_class={"train": 1, "test": 1})
    with pytest.raises(DataError) as info:
        FC100(str(root), cache_dir=str(tmp_path / "cache")).classes("val")
    assert "non-insect_invertebrates/lobster" in str(info.value)


def test_unofficial_files_are_read_with_a_warning(
    cifar_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="metarun.data.cifar100"):
        CIFARFS(str(cifar_root), cache_dir=str(tmp_path / "cache")).classes("train")
    warned = {r.getMessage().split(" ")[0] for r in caplog.records}
    assert warned == {str(cifar_root / "cifar-100-python" / n) for n in ("train", "test", "meta")}


# --------------------------------------------------------------------------- download


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_goes_through_torchvision(
    tmp_path: Path, served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, directory = served
    source = write_cifar100(tmp_path / "source", per_class={"train": 2, "test": 1})
    archive = directory / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-100-python", arcname="cifar-100-python")
    folder = source / "cifar-100-python"
    official = cifar100_module.TorchvisionCIFAR100
    # Point torchvision's CIFAR100 at the local archive and its checksums.
    monkeypatch.setattr(official, "url", f"{url}/cifar-100-python.tar.gz")
    monkeypatch.setattr(official, "tgz_md5", md5(archive))
    monkeypatch.setattr(official, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(official, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(official, "meta", dict(official.meta, md5=md5(folder / "meta")))

    root = tmp_path / "data"
    dataset = FC100(str(root), download=True, cache_dir=str(tmp_path / "cache"))
    assert dataset.classes("test").num_classes == 20
    assert dataset.classes("test").counts.tolist() == [3] * 20
    assert (root / "cifar-100-python" / "meta").is_file()


def test_a_failed_download_is_one_line(
    tmp_path: Path, served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, directory = served
    (directory / "cifar-100-python.tar.gz").write_bytes(b"not the archive")
    monkeypatch.setattr(
        cifar100_module.TorchvisionCIFAR100, "url", f"{url}/cifar-100-python.tar.gz"
    )
    with pytest.raises(DataError) as info:
        CIFARFS(str(tmp_path / "data"), download=True, cache_dir=str(tmp_path / "c")).classes(
            "train"
        )
    assert "\n" not in str(info.value) and str(tmp_path / "data") in str(info.value)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(("name", "kind"), [("cifar_fs", CIFARFS), ("fc100", FC100)])
def test_config_builds_the_data_set(compose_config, name: str, kind: type, tmp_path: Path) -> None:
    config = compose_config([f"dataset={name}", f"dataset.root={tmp_path}"])
    dataset = instantiate(config.dataset)
    assert type(dataset) is kind
    assert dataset.task.input_shape == (3, 32, 32)
    assert (dataset.episodes.ways, dataset.episodes.shots, dataset.episodes.queries) == (5, 1, 15)
    default = compose_config([f"dataset={name}"]).dataset.root
    assert default.endswith("/cifar100"), "both data sets share one CIFAR-100 folder"
    assert not list(tmp_path.iterdir()), "constructing reads nothing"
