"""miniImageNet (Vinyals et al. 2016, "Matching Networks for One Shot Learning", NeurIPS) with
the split of Ravi & Larochelle (2017, "Optimization as a Model for Few-Shot Learning", ICLR):
100 ImageNet classes of 600 images, 64 for meta-training, 16 for validation and 20 for test,
at 84x84 RGB.

Two layouts under ``root``, chosen by ``format`` (``auto``: the complete one; the pickles when
both are, as they need no JPEG decoding):

* ``images``: ``root/images/<wnid><8 digits>.jpg`` (Ravi's 60,000 images) with Ravi's
  ``train.csv``, ``val.csv`` and ``test.csv`` (header ``filename,label``) next to the folder.
  The csv files, when present, say which images form each split and must agree with the shipped
  split (``splits/mini_imagenet.json``): a class in the wrong split is an error, fewer classes
  than the paper's a warning (a subset). Without them the shipped split assigns each image by
  the wnid its name begins with.
* ``pickle``: ``root/mini-imagenet-cache-{train,val,test}.pkl`` as written by Ren et al.
  (2018)'s code and widely shared since: dicts with ``image_data`` (uint8 ``[N, 84, 84, 3]``,
  RGB) and ``class_dict`` (``{wnid: [row, ...]}``). They are numpy pickles, loaded with an
  unpickler that resolves only numpy's array reconstruction (``metarun.data.pickles``).

There is no official, stable, checksummed download (the images fall under the ImageNet
licence), so nothing is fetched: a missing file is an error that lists what to put where.
Each split is decoded once into a uint8 cache keyed by its files' names, sizes and times and by
the image size; a different ``image_size`` resizes with ``ImageFormat.encode``.
"""

from __future__ import annotations

import csv
import json
import logging
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from metarun.data.cache import cache_key, cached, files_fingerprint
from metarun.data.decode_pool import decode_all, decode_bytes
from metarun.data.episodes import ClassImages
from metarun.data.image_dataset import SPLITS, ImageDataset, Split
from metarun.data.images import ImageFormat
from metarun.data.pickles import as_str, load_numpy_pickle, str_keys
from metarun.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = ("auto", "images", "pickle")
CLASS_COUNTS: dict[Split, int] = {"train": 64, "val": 16, "test": 20}
IMAGES_PER_CLASS = 600


def ravi_split() -> dict[Split, list[str]]:
    """The shipped Ravi & Larochelle split: wnids per split."""
    listing = json.loads(files("metarun.data").joinpath("splits/mini_imagenet.json").read_text())
    return {split: list(listing[split]) for split in SPLITS}


def pickle_path(root: Path, split: Split) -> Path:
    return root / f"mini-imagenet-cache-{split}.pkl"


def expected_files(root: Path) -> str:
    """Both layouts, with full paths, for error messages."""
    pickles = ", ".join(str(pickle_path(root, s)) for s in SPLITS)
    csvs = ", ".join(str(root / f"{s}.csv") for s in SPLITS)
    return (
        f"put either the 60,000 JPEGs of Ravi & Larochelle's release in {root / 'images'}/ "
        f"(named like n0153282900000005.jpg; optionally with {csvs}), or the three pickles "
        f"{pickles}; no official download exists (ImageNet licence), so obtain them by hand"
    )


def choose_format(root: Path, requested: str) -> str:
    """``images`` or ``pickle``: what ``requested`` names, or (``auto``) what is complete."""
    has_pickles = all(pickle_path(root, s).is_file() for s in SPLITS)
    has_images = (root / "images").is_dir()
    if requested == "pickle" and not has_pickles:
        missing = [str(pickle_path(root, s)) for s in SPLITS if not pickle_path(root, s).is_file()]
        raise DataError(
            f"miniImageNet pickles missing: {', '.join(missing)}; {expected_files(root)}"
        )
    if requested == "images" and not has_images:
        raise DataError(f"miniImageNet folder {root / 'images'} is missing; {expected_files(root)}")
    if requested != "auto":
        return requested
    if has_pickles:
        return "pickle"
    if has_images:
        return "images"
    present = [str(pickle_path(root, s)) for s in SPLITS if pickle_path(root, s).is_file()]
    found = f" (found only {', '.join(present)})" if present else ""
    raise DataError(f"no miniImageNet data under {root}{found}; {expected_files(root)}")


def check_against_split(
    classes: list[str], split: Split, official: dict[Split, list[str]], source: Path
) -> None:
    """Every class of ``split`` is one the paper's split puts there; fewer is a subset."""
    where = {wnid: s for s, wnids in official.items() for wnid in wnids}
    for wnid in classes:
        if where.get(wnid) != split:
            belongs = f"the {where[wnid]} split" if wnid in where else "no split"
            raise DataError(
                f"{source} puts class {wnid!r} in the {split} split, but the Ravi & Larochelle "
                f"split has it in {belongs}; use the original files"
            )
    if len(set(classes)) < CLASS_COUNTS[split]:
        log.warning(
            "%s holds %d of the %d %s classes of the Ravi & Larochelle split: using a subset",
            source,
            len(set(classes)),
            CLASS_COUNTS[split],
            split,
        )


# --------------------------------------------------------------------------- images/ layout


def read_split_csv(path: Path) -> list[tuple[str, str]]:
    """``[(filename, wnid), ...]`` from one of Ravi's csv files (header ``filename,label``)."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read ({error})") from None
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
        raise DataError(f"{path} does not start with the header 'filename,label' of Ravi's csv")
    entries = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path} line {number} is not 'filename,label': {','.join(row)!r}")
        entries.append((row[0].strip(), row[1].strip()))
    if not entries:
        raise DataError(f"{path} lists no images")
    return entries


def images_by_split(
    root: Path, official: dict[Split, list[str]]
) -> dict[Split, list[tuple[Path, str]]]:
    """``{split: [(jpeg, wnid), ...]}`` from the csv files, or from the shipped split."""
    folder = root / "images"
    csv_paths = {split: root / f"{split}.csv" for split in SPLITS}
    present = [split for split, path in csv_paths.items() if path.is_file()]
    if present and len(present) < len(SPLITS):
        missing = [str(csv_paths[s]) for s in SPLITS if s not in present]
        raise DataError(
            f"{', '.join(missing)} missing next to {csv_paths[present[0]]}: use all three of "
            f"Ravi's csv files, or none (the shipped split then assigns the images)"
        )
    result: dict[Split, list[tuple[Path, str]]] = {}
    if present:
        for split in SPLITS:
            entries = read_split_csv(csv_paths[split])
            check_against_split([wnid for _, wnid in entries], split, official, csv_paths[split])
            result[split] = [(folder / name, wnid) for name, wnid in entries]
        listed = [path for entries in result.values() for path, _ in entries]
        missing_images = [path for path in listed if not path.is_file()]
        if missing_images:
            raise DataError(
                f"{missing_images[0]} is missing ({len(missing_images)} of the {len(listed)} "
                f"images the csv files list are); {expected_files(root)}"
            )
        return result
    jpegs = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    by_class: dict[str, list[Path]] = {}
    for path in jpegs:
        by_class.setdefault(path.name[:9], []).append(path)
    for split, wnids in official.items():
        absent = [w for w in wnids if w not in by_class]
        if absent:
            raise DataError(
                f"{folder} has no images of {len(absent)} {split} classes (e.g. {absent[0]}); "
                f"without train.csv, val.csv and test.csv every class of the Ravi & Larochelle "
                f"split must be there; {expected_files(root)}"
            )
        result[split] = [(path, wnid) for wnid in wnids for path in by_class[wnid]]
    return result


def decode_image_split(
    root: Path, split: Split, entries: list[tuple[Path, str]], image_format: ImageFormat,
    cache_dir: Path | None,
) -> ClassImages:  # fmt: skip
    """One split of the images/ layout, classes in order of first appearance, images sorted."""
    by_class: dict[str, list[Path]] = {}
    for path, wnid in entries:
        by_class.setdefault(wnid, []).append(path)
    names = sorted(by_class)
    ordered = [path for wnid in names for path in sorted(by_class[wnid])]
    key = cache_key(
        {"format": image_format.__dict__, "names": names, "files": files_fingerprint(root, ordered)}
    )

    def build() -> dict[str, Any]:
        log.info("decoding %d miniImageNet %s images (once; cached after)", len(ordered), split)
        images = decode_all(
            ordered,
            lambda path: decode_bytes(path.read_bytes(), image_format, str(path)),
            image_format,
            f"miniImageNet {split} images",
        )
        counts = torch.tensor([len(by_class[wnid]) for wnid in names])
        return {"images": images, "counts": counts, "names": names}

    entry = cached(f"mini_imagenet-images-{split}", key, build, cache_dir)
    return ClassImages(entry["images"], entry["counts"], entry["names"])


# --------------------------------------------------------------------------- pickle layout


def read_pickle_split(path: Path) -> tuple[np.ndarray, dict[str, list[int]]]:
    """``image_data`` and ``class_dict`` of one cache pickle, checked."""
    data = load_numpy_pickle(path)
    if not isinstance(data, dict):
        raise DataError(
            f"{path} holds a {type(data).__name__}, not the dict of a miniImageNet cache"
        )
    data = str_keys(data)
    missing = [key for key in ("image_data", "class_dict") if key not in data]
    if missing:
        raise DataError(
            f"{path} has no {missing[0]!r} key (has {sorted(map(str, data))}); expected "
            f"'image_data' and 'class_dict'"
        )
    images, class_dict = data["image_data"], data["class_dict"]
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[3] != 3
    ):
        shape = getattr(images, "shape", None)
        raise DataError(
            f"{path}: 'image_data' must be a uint8 array [N, H, W, 3], got "
            f"{type(images).__name__} {getattr(images, 'dtype', '')} {shape}"
        )
    if not isinstance(class_dict, dict) or not class_dict:
        raise DataError(f"{path}: 'class_dict' must be a non-empty {{wnid: [row, ...]}} dict")
    rows = {as_str(wnid): [int(i) for i in indices] for wnid, indices in class_dict.items()}
    for wnid, indices in rows.items():
        bad = [i for i in indices if not 0 <= i < len(images)]
        if bad or not indices:
            raise DataError(
                f"{path}: class {wnid} lists rows {bad[:3] or '[]'} outside the "
                f"{len(images)} images"
            )
    return images, rows


def decode_pickle_split(
    root: Path, split: Split, official: dict[Split, list[str]], image_format: ImageFormat,
    cache_dir: Path | None,
) -> ClassImages:  # fmt: skip
    """One split of the pickle layout, classes sorted by wnid."""
    path = pickle_path(root, split)
    key = cache_key({"format": image_format.__dict__, "files": files_fingerprint(root, [path])})

    def build() -> dict[str, Any]:
        log.info("reading %s (once; cached after)", path)
        array, rows = read_pickle_split(path)
        check_against_split(list(rows), split, official, path)
        names = sorted(rows)
        order = torch.tensor([i for wnid in names for i in rows[wnid]], dtype=torch.long)
        if array.shape[1:3] == (image_format.size, image_format.size):
            pixels = torch.from_numpy(array).permute(0, 3, 1, 2)[order].contiguous()
        else:  # resized exactly as a JPEG of the same pixels would be
            pixels = decode_all(
                order.tolist(),
                lambda row: image_format.encode(Image.fromarray(array[row])),
                image_format,
                f"miniImageNet {split} images",
            )
        counts = torch.tensor([len(rows[wnid]) for wnid in names])
        return {"images": pixels, "counts": counts, "names": names}

    entry = cached(f"mini_imagenet-pickle-{split}", key, build, cache_dir)
    return ClassImages(entry["images"], entry["counts"], entry["names"])


class MiniImageNet(ImageDataset):
    """miniImageNet episodes on the Ravi & Larochelle split (shared options: ``ImageDataset``)."""

    def __init__(
        self,
        root: str,
        format: str = "auto",
        download: bool = False,
        image_size: int = 84,
        **options: Any,
    ) -> None:
        if format not in FORMATS:
            raise ConfigError(
                "dataset.format", f"must be one of {', '.join(FORMATS)}, got {format!r}"
            )
        super().__init__(ImageFormat(size=image_size, channels=3), **options)
        self.root = Path(root).expanduser()
        self.format = format
        if download:
            raise ConfigError(
                "dataset.download",
                "miniImageNet has no official checksummed download (ImageNet licence); set it "
                f"to false and {expected_files(self.root)}",
            )

    def load_splits(self) -> dict[Split, ClassImages]:
        official = ravi_split()
        layout = choose_format(self.root, self.format)
        log.info("reading miniImageNet from %s (%s layout)", self.root, layout)
        if layout == "pickle":
            return {
                split: decode_pickle_split(
                    self.root, split, official, self.image_format, self.cache_dir
                )
                for split in SPLITS
            }
        entries = images_by_split(self.root, official)
        return {
            split: decode_image_split(
                self.root, split, entries[split], self.image_format, self.cache_dir
            )
            for split in SPLITS
        }
