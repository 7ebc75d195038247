"""tieredImageNet (Ren et al. 2018, "Meta-Learning for Semi-Supervised Few-Shot
Classification", ICLR): 608 ImageNet classes (779,165 images at 84x84 RGB) under 34 high-level
categories. The categories, not the classes, are split 20/6/8 between meta-training, validation
and test (351/97/160 classes), so test classes are far from the training classes.

Reads the files of the authors' release (``tiered-imagenet.tar``) under ``root``, per split:

* ``{split}_images_png.pkl``: a pickled list of PNG-encoded images (OpenCV's ``imencode``
  byte arrays), or ``{split}_images.npz``: the same images decoded (key ``images``, uint8
  ``[N, 84, 84, 3]``) as the authors' ``decompress`` tool writes them, which is in OpenCV's BGR
  channel order (``npz_channel_order``). ``format: auto`` takes the PNG list when both exist.
* ``{split}_labels.pkl``: a dict with ``label_specific`` (each image's class index),
  ``label_general`` (its category index), and ``label_specific_str`` and
  ``label_general_str`` (the names those indices refer to).

Classes are named ``<category>/<class>`` from those names, so ``within_group`` draws each
episode's classes from one category. Checked on reading: no class and no category appears in
two splits; where the names are wnids, each is in the split the paper gives it (the shipped
``splits/tiered_imagenet.json``, Ren et al.'s split files); other counts than 351/97/160
classes and 20/6/8 categories are reported as a subset or another version.

There is no official, stable, checksummed download (ImageNet licence), so nothing is fetched: a
missing file is an error that lists what to put where. Each split is decoded once into a uint8
cache keyed by its files' names, sizes and times, the image size and the channel order.
Decoding the 779,165 PNGs runs on a thread pool (``workers``, default one per core). Measured
on a busy 2-core machine, an 84x84 photo-like PNG took 1 to 2 ms per core to decode and store:
about 15 to 25 minutes on one core, a few minutes on 8; once per machine, as the cache keeps
the result. Loading a PNG pickle needs all its bytes in memory, and the decoded training split
alone takes 9.5 GB (448,695 x 84 x 84 x 3 bytes).
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from metarun.data.cache import cache_key, cached, files_fingerprint
from metarun.data.decode_pool import CHUNK, decode_all, decode_bytes
from metarun.data.episodes import ClassImages
from metarun.data.image_dataset import SPLITS, ImageDataset, Split
from metarun.data.images import ImageFormat
from metarun.data.pickles import as_str, load_numpy_pickle, one_line, str_keys
from metarun.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = ("auto", "png", "npz")
CHANNEL_ORDERS = ("bgr", "rgb")
CLASS_COUNTS: dict[Split, int] = {"train": 351, "val": 97, "test": 160}
CATEGORY_COUNTS: dict[Split, int] = {"train": 20, "val": 6, "test": 8}
LABEL_KEYS = ("label_specific", "label_general", "label_specific_str", "label_general_str")
WNID = re.compile(r"n\d{8}")


def ren_split() -> dict[Split, dict[str, list[str]]]:
    """The shipped split of Ren et al.: ``{split: {category wnid: [class wnid, ...]}}``."""
    text = files("metarun.data").joinpath("splits/tiered_imagenet.json").read_text()
    listing = json.loads(text)
    return {split: dict(listing[split]) for split in SPLITS}


def paths(root: Path, split: Split) -> dict[str, Path]:
    return {
        "png": root / f"{split}_images_png.pkl",
        "npz": root / f"{split}_images.npz",
        "labels": root / f"{split}_labels.pkl",
    }


def expected_files(root: Path) -> str:
    wanted = "; ".join(
        f"{p['png']} (or {p['npz'].name}) and {p['labels'].name}"
        for p in (paths(root, s) for s in SPLITS)
    )
    return (
        f"put the files of Ren et al.'s tiered-imagenet.tar there: {wanted}; no official "
        f"download exists (ImageNet licence), so obtain them by hand"
    )


def image_file(root: Path, split: Split, requested: str) -> tuple[str, Path]:
    """``("png" | "npz", path)`` of a split's images; what is missing is a one-line error."""
    found = paths(root, split)
    kinds = ("png", "npz") if requested == "auto" else (requested,)
    for kind in kinds:
        if found[kind].is_file():
            if not found["labels"].is_file():
                raise DataError(f"{found['labels']} is missing; {expected_files(root)}")
            return kind, found[kind]
    names = " or ".join(str(found[k]) for k in kinds)
    raise DataError(f"tieredImageNet {split} images missing: {names}; {expected_files(root)}")


def clean(name: str) -> str:
    """A label as a class-name part: ``/`` separates category and class, so none inside."""
    return " ".join(name.replace("/", "-").split())


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Per-image class and category indices, and the names they index, checked."""
    data = load_numpy_pickle(path)
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a {type(data).__name__}, not a tieredImageNet label dict")
    data = str_keys(data)
    missing = [key for key in LABEL_KEYS if key not in data]
    if missing:
        raise DataError(
            f"{path} has no {missing[0]!r} key (has {sorted(map(str, data))}); expected "
            f"{', '.join(LABEL_KEYS)}"
        )
    specific = np.asarray(data["label_specific"]).astype(np.int64).reshape(-1)
    general = np.asarray(data["label_general"]).astype(np.int64).reshape(-1)
    specific_str = [as_str(name) for name in data["label_specific_str"]]
    general_str = [as_str(name) for name in data["label_general_str"]]
    if len(specific) != len(general) or len(specific) == 0:
        raise DataError(
            f"{path}: label_specific ({len(specific)}) and label_general ({len(general)}) must "
            f"give one class and one category per image"
        )
    for key, labels, names in (
        ("label_specific", specific, specific_str),
        ("label_general", general, general_str),
    ):
        if labels.min() < 0 or labels.max() >= len(names):
            raise DataError(
                f"{path}: {key} holds indices up to {labels.max()} but {key}_str has "
                f"{len(names)} names"
            )
    return specific, general, specific_str, general_str


def class_names(
    path: Path, specific: np.ndarray, general: np.ndarray, specific_str: list[str],
    general_str: list[str],
) -> tuple[list[int], list[str]]:  # fmt: skip
    """The class indices that have images, in order, and their ``category/class`` names."""
    pairs = np.unique(np.stack([specific, general], axis=1), axis=0)
    present = np.unique(pairs[:, 0])
    if len(pairs) != len(present):
        values, counts = np.unique(pairs[:, 0], return_counts=True)
        split_class = specific_str[int(values[counts > 1][0])]
        raise DataError(f"{path}: class {split_class!r} has images in more than one category")
    category = dict(pairs.tolist())
    names = [f"{clean(general_str[category[c]])}/{clean(specific_str[c])}" for c in present]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: two classes share a name in label_specific_str")
    return present.tolist(), names


def load_npz_images(path: Path) -> np.ndarray:
    """``images`` of an npz archive (no pickles allowed inside)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files:
                raise DataError(f"{path} has no 'images' array (has {archive.files})")
            return archive["images"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{path} is not a readable npz archive ({one_line(error)}); download it again"
        ) from None


def decode_split(
    root: Path, split: Split, requested: str, channel_order: str, image_format: ImageFormat,
    cache_dir: Path | None, workers: int | None,
) -> ClassImages:  # fmt: skip
    """One split as ``ClassImages``, from the cache when it is current."""
    kind, images_path = image_file(root, split, requested)
    labels_path = paths(root, split)["labels"]
    key = cache_key(
        {
            "format": image_format.__dict__,
            "kind": kind,
            "channels": channel_order if kind == "npz" else "rgb",
            "files": files_fingerprint(root, [images_path, labels_path]),
        }
    )

    def build() -> dict[str, Any]:
        specific, general, specific_str, general_str = read_labels(labels_path)
        present, names = class_names(labels_path, specific, general, specific_str, general_str)
        order = np.argsort(specific, kind="stable")
        counts = torch.from_numpy(np.bincount(specific)[present])
        what = f"tieredImageNet {split} images"
        log.info("decoding %d %s from %s (once; cached after)", len(order), what, images_path)
        if kind == "png":
            encoded = load_numpy_pickle(images_path)
            if not isinstance(encoded, list | tuple):
                raise DataError(f"{images_path} holds a {type(encoded).__name__}, not a list")
            check_count(images_path, len(encoded), labels_path, len(specific))
            images = decode_all(
                order.tolist(),
                lambda i: decode_bytes(
                    _as_bytes(encoded[i]), image_format, f"{images_path} image {i}"
                ),
                image_format,
                what,
                workers,
            )
        else:
            array = load_npz_images(images_path)
            if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3:
                raise DataError(
                    f"{images_path}: 'images' must be uint8 [N, H, W, 3], got {array.dtype} "
                    f"{list(array.shape)}"
                )
            check_count(images_path, len(array), labels_path, len(specific))
            images = npz_to_tensor(array, order, channel_order, image_format, what, workers)
        return {"images": images, "counts": counts, "names": names}

    entry = cached(f"tiered_imagenet-{split}", key, build, cache_dir)
    return ClassImages(entry["images"], entry["counts"], entry["names"])


def check_count(images_path: Path, images: int, labels_path: Path, labels: int) -> None:
    if images != labels:
        raise DataError(
            f"{images_path} holds {images} images but {labels_path} labels {labels}; both "
            f"files must come from the same release"
        )


def _as_bytes(item: Any) -> bytes:
    return item.tobytes() if isinstance(item, np.ndarray) else bytes(item)


def npz_to_tensor(
    array: np.ndarray, order: np.ndarray, channel_order: str, image_format: ImageFormat,
    what: str, workers: int | None,
) -> torch.Tensor:  # fmt: skip
    """Decoded ``[N, H, W, 3]`` pixels as stored ``[N, 3, S, S]`` RGB, in ``order``."""
    if channel_order == "bgr":
        array = array[..., ::-1]
    if array.shape[1:3] != (image_format.size, image_format.size):
        return decode_all(
            order.tolist(),
            lambda i: image_format.encode(Image.fromarray(np.ascontiguousarray(array[i]))),
            image_format,
            what,
            workers,
        )
    images = torch.empty(len(order), *image_format.shape, dtype=torch.uint8)
    for start in range(0, len(order), CHUNK):
        part = np.ascontiguousarray(array[order[start : start + CHUNK]])
        images[start : start + len(part)] = torch.from_numpy(part).permute(0, 3, 1, 2)
    return images


def check_splits(splits: dict[Split, ClassImages], root: Path) -> None:
    """Disjoint classes and categories; wnids where the paper puts them; counts reported."""
    official = ren_split()
    official_classes = {s: {w for ws in cats.values() for w in ws} for s, cats in official.items()}
    seen_classes: dict[str, Split] = {}
    seen_categories: dict[str, Split] = {}
    for split, classes in splits.items():
        labels = paths(root, split)["labels"]
        for name in classes.names:
            category, specific = name.split("/", 1)
            for seen, value, kind in (
                (seen_classes, specific, "class"),
                (seen_categories, category, "category"),
            ):
                if seen.setdefault(value, split) != split:
                    raise DataError(
                        f"{labels}: {kind} {value!r} is also in the {seen[value]} split; "
                        f"tieredImageNet's splits share no {kind}"
                    )
            if WNID.fullmatch(specific) and specific not in official_classes[split]:
                raise DataError(
                    f"{labels}: class {specific} is not one of the {split} classes of Ren et "
                    f"al.'s split; are the files of another split or data set?"
                )
            if WNID.fullmatch(category) and category not in official[split]:
                raise DataError(
                    f"{labels}: category {category} is not one of the {split} categories of Ren "
                    f"et al.'s split"
                )
        categories = len(set(classes.groups))
        if (classes.num_classes, categories) != (CLASS_COUNTS[split], CATEGORY_COUNTS[split]):
            log.warning(
                "%s: %d classes in %d categories, where Ren et al.'s %s split has %d in %d: "
                "a subset or another version",
                labels,
                classes.num_classes,
                categories,
                split,
                CLASS_COUNTS[split],
                CATEGORY_COUNTS[split],
            )


class TieredImageNet(ImageDataset):
    """tieredImageNet episodes on Ren et al.'s split (shared options: ``ImageDataset``)."""

    def __init__(
        self,
        root: str,
        format: str = "auto",
        npz_channel_order: str = "bgr",
        download: bool = False,
        image_size: int = 84,
        workers: int | None = None,
        **options: Any,
    ) -> None:
        if format not in FORMATS:
            raise ConfigError(
                "dataset.format", f"must be one of {', '.join(FORMATS)}, got {format!r}"
            )
        if npz_channel_order not in CHANNEL_ORDERS:
            raise ConfigError(
                "dataset.npz_channel_order", f"must be bgr or rgb, got {npz_channel_order!r}"
            )
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise ConfigError("dataset.workers", f"must be null or at least 1, got {workers!r}")
        super().__init__(ImageFormat(size=image_size, channels=3), **options)
        self.root = Path(root).expanduser()
        self.format = format
        self.npz_channel_order = npz_channel_order
        self.workers = workers
        if download:
            raise ConfigError(
                "dataset.download",
                "tieredImageNet has no official checksummed download (ImageNet licence); set it "
                f"to false and {expected_files(self.root)}",
            )

    def load_splits(self) -> dict[Split, ClassImages]:
        for split in SPLITS:  # every file present before minutes of decoding start
            image_file(self.root, split, self.format)
        splits = {
            split: decode_split(
                self.root,
                split,
                self.format,
                self.npz_channel_order,
                self.image_format,
                self.cache_dir,
                self.workers,
            )
            for split in SPLITS
        }
        check_splits(splits, self.root)
        return splits
