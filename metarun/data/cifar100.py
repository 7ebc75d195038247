"""CIFAR-100 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images"), read
once for the few-shot sets built from it: CIFAR-FS (``cifar_fs``) and FC100 (``fc100``).

Both pool the official train and test files (600 images per class) and split by classes, so
this module reads the python version (``<root>/cifar-100-python/{train,test,meta}``) into one
decoded cache of all 100 classes, named ``"<superclass>/<class>"`` from CIFAR-100's coarse and
fine labels; each data set then only picks its classes. A missing folder is downloaded with
torchvision's ``CIFAR100`` (its archive MD5 check) when ``download`` is set.

The files are read here rather than through torchvision, which refuses any file whose MD5 is not
the official one: the decoding is the same (``pickle.load(..., encoding="latin1")``, rows of
3072 bytes in channel-major order), and the official MD5s are checked once, when the cache is
built, with a warning rather than an error for other files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import CIFAR100 as TorchvisionCIFAR100

from metarun.data.cache import cache_key, cached, files_fingerprint
from metarun.data.episodes import ClassImages
from metarun.data.image_dataset import ImageDataset, Split
from metarun.data.images import ImageFormat
from metarun.errors import DataError

log = logging.getLogger(__name__)

FOLDER = TorchvisionCIFAR100.base_folder  # "cifar-100-python"
URL = TorchvisionCIFAR100.url
NATIVE_SIZE = 32
# The official files and their MD5s, as torchvision records them.
OFFICIAL_MD5 = {
    **{name: md5 for name, md5 in TorchvisionCIFAR100.train_list + TorchvisionCIFAR100.test_list},
    TorchvisionCIFAR100.meta["filename"]: TorchvisionCIFAR100.meta["md5"],
}
PARTS = ("train", "test")
META = "meta"


def missing_files(root: Path) -> list[Path]:
    folder = root / FOLDER
    return [folder / name for name in (*PARTS, META) if not (folder / name).is_file()]


def ensure_cifar100(root: Path, download: bool) -> Path:
    """``root/cifar-100-python``, downloaded first (by torchvision) if a file is missing."""
    missing = missing_files(root)
    if not missing:
        return root / FOLDER
    if not download:
        raise DataError(
            f"CIFAR-100 file {missing[0]} is missing; set dataset.download=true to fetch {URL}, "
            f"or unpack that archive into {root} so that {root / FOLDER}/ holds train, test "
            f"and meta"
        )
    log.info("downloading CIFAR-100 into %s", root)
    try:
        TorchvisionCIFAR100(str(root), train=False, download=True)
    except Exception as error:  # network and archive errors come in many types
        raise DataError(
            f"could not download CIFAR-100 ({type(error).__name__}: {error}); download {URL} "
            f"by hand and unpack it into {root}"
        ) from None
    if missing_files(root):
        raise DataError(f"{URL} did not unpack into {root / FOLDER}/ (train, test, meta)")
    return root / FOLDER


def read_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR python file as a dict with str keys, decoded as torchvision decodes it."""
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except Exception as error:  # truncated, garbage or foreign: unpickling raises many types
        raise DataError(
            f"{path} is not a readable CIFAR-100 file ({type(error).__name__}: {error}); delete "
            f"it and download {URL} again"
        ) from None
    if not isinstance(entry, dict):
        raise DataError(f"{path} holds a {type(entry).__name__}, not a CIFAR-100 dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: v for key, v in entry.items()}


def field(entry: dict[str, Any], key: str, path: Path) -> Any:
    if key not in entry:
        raise DataError(f"{path} has no {key!r} entry (has {', '.join(sorted(entry))})")
    return entry[key]


def label_names(path: Path) -> tuple[list[str], list[str]]:
    """The fine and coarse label names of the ``meta`` file."""
    meta = read_pickle(path)
    fine, coarse = (
        [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in field(meta, key, path)]
        for key in ("fine_label_names", "coarse_label_names")
    )
    if len(fine) != 100 or len(coarse) != 20:
        raise DataError(
            f"{path} names {len(fine)} classes and {len(coarse)} superclasses; CIFAR-100 has 100 "
            f"and 20"
        )
    return fine, coarse


def read_part(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels ``[N, 3, 32, 32]`` (uint8), fine and coarse labels of ``train`` or ``test``."""
    entry = read_pickle(path)
    data = np.asarray(field(entry, "data", path))
    fine = np.asarray(field(entry, "fine_labels", path), dtype=np.int64)
    coarse = np.asarray(field(entry, "coarse_labels", path), dtype=np.int64)
    pixels = 3 * NATIVE_SIZE * NATIVE_SIZE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels:
        raise DataError(
            f"{path}: 'data' is {data.dtype} {list(data.shape)}, expected uint8 [N, {pixels}]"
        )
    if not len(data) == len(fine) == len(coarse):
        raise DataError(
            f"{path}: {len(data)} images but {len(fine)} fine and {len(coarse)} coarse labels"
        )
    if len(fine) and (fine.min() < 0 or fine.max() > 99 or coarse.min() < 0 or coarse.max() > 19):
        raise DataError(f"{path}: labels outside 0-99 (fine) or 0-19 (coarse)")
    return data.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE), fine, coarse


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def warn_if_unofficial(folder: Path) -> None:
    for name, md5 in OFFICIAL_MD5.items():
        if md5_of(folder / name) != md5:
            log.warning(
                "%s is not the official CIFAR-100 file (MD5 differs from %s); reading it anyway",
                folder / name,
                md5,
            )


def resized(pixels: np.ndarray, image_format: ImageFormat) -> torch.Tensor:
    """Native 32x32 pixels as stored tensors of ``image_format`` (a copy when no resize)."""
    if image_format.size == NATIVE_SIZE:
        return torch.from_numpy(np.ascontiguousarray(pixels))
    out = torch.empty(len(pixels), *image_format.shape, dtype=torch.uint8)
    for row, image in enumerate(pixels):
        out[row] = image_format.encode(Image.fromarray(image.transpose(1, 2, 0)))
    return out


def decode_cifar100(folder: Path, image_format: ImageFormat, cache_dir: Path | None) -> ClassImages:
    """All 100 classes, train then test images of each, from the cache when it is current."""
    paths = [folder / name for name in (*PARTS, META)]
    key = cache_key({"format": image_format.__dict__, "files": files_fingerprint(folder, paths)})

    def build() -> dict:
        log.info("decoding CIFAR-100 from %s (once; cached after)", folder)
        fine_names, coarse_names = label_names(folder / META)
        parts = [read_part(folder / part) for part in PARTS]
        pixels = np.concatenate([p[0] for p in parts])
        fine = np.concatenate([p[1] for p in parts])
        coarse = np.concatenate([p[2] for p in parts])
        superclass: dict[int, int] = {}
        for f, c in zip(fine.tolist(), coarse.tolist(), strict=True):
            if superclass.setdefault(f, c) != c:
                raise DataError(
                    f"{folder}: class {fine_names[f]!r} has images in superclasses "
                    f"{coarse_names[superclass[f]]!r} and {coarse_names[c]!r}"
                )
        warn_if_unofficial(folder)
        order = np.argsort(fine, kind="stable")  # by class, train before test, file order
        present = sorted(superclass)
        return {
            "images": resized(pixels[order], image_format),
            "counts": torch.from_numpy(np.bincount(fine, minlength=100)[present]),
            "names": [f"{coarse_names[superclass[f]]}/{fine_names[f]}" for f in present],
        }

    entry = cached("cifar100", key, build, cache_dir)
    return ClassImages(entry["images"], entry["counts"], entry["names"])


def split_listing(filename: str) -> dict[str, Any]:
    """A split file shipped in ``metarun/data/splits``."""
    return json.loads(files("metarun.data").joinpath(f"splits/{filename}").read_text())


def class_of(name: str) -> str:
    return name.split("/", 1)[1]


def pick(classes: ClassImages, wanted: list[str], what: str, folder: Path) -> ClassImages:
    """The classes named ``"superclass/class"`` in ``wanted``, in that order; all must exist."""
    index = {name: i for i, name in enumerate(classes.names)}
    absent = [name for name in wanted if name not in index]
    if absent:
        raise DataError(
            f"{folder} lacks {len(absent)} {what} classes (first: {absent[0]}); is it the "
            f"official CIFAR-100 ({URL})?"
        )
    return classes.select([index[name] for name in wanted])


class CIFAR100Classes(ImageDataset):
    """A few-shot split of CIFAR-100's classes; subclasses say which classes go where."""

    def __init__(
        self, root: str, download: bool = False, image_size: int = NATIVE_SIZE, **options: Any
    ) -> None:
        super().__init__(ImageFormat(size=image_size, channels=3), **options)
        self.root = Path(root).expanduser()
        self.download = download

    def split_names(self, classes: ClassImages) -> dict[Split, list[str]]:
        """``"superclass/class"`` names per split."""
        raise NotImplementedError

    def load_splits(self) -> dict[Split, ClassImages]:
        folder = ensure_cifar100(self.root, self.download)
        classes = decode_cifar100(folder, self.image_format, self.cache_dir)
        wanted = self.split_names(classes)
        return {split: pick(classes, names, split, folder) for split, names in wanted.items()}


__all__ = ["CIFAR100Classes", "decode_cifar100", "ensure_cifar100", "split_listing"]
