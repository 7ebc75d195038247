"""CUB-200-2011 (Wah, Branson, Welinder, Perona & Belongie 2011, Caltech CNS-TR-2011-001):
11,788 photographs of 200 North American bird species, with a bounding box per bird.

The few-shot split is that of Chen, Liu, Kira, Wang & Huang (2019, "A Closer Look at Few-shot
Classification", ICLR; their ``filelists/CUB/write_CUB_filelist.py``): the 200 class folders in
sorted order, ``i % 2 == 0`` meta-training (100 classes), ``i % 4 == 1`` validation (50) and
``i % 4 == 3`` test (50). The folder names per split ship in ``splits/cub_chen.json``.

Reads the official layout ``<root>/CUB_200_2011/images/<NNN.Class_name>/*.jpg``, listed by the
official ``images.txt`` when present (a listed image that is missing is an error), downloading
the official archive (SHA-256 checked) when asked. Images are decoded once, at ``image_size``
(84 as in Chen et al.), optionally cropped to the official ``bounding_boxes.txt`` first.
"""

from __future__ import annotations

import json
import logging
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from metarun.data.cache import cache_key, cached, files_fingerprint
from metarun.data.download import Archive, download_and_extract
from metarun.data.episodes import ClassImages
from metarun.data.image_dataset import SPLITS, ImageDataset, Split
from metarun.data.images import ImageFormat
from metarun.errors import DataError

log = logging.getLogger(__name__)

FOLDER = "CUB_200_2011"
SPLIT_FILE = "cub_chen.json"
# The archive of the Caltech data repository (record 65de6-vp158), then its former address.
# SHA-256 as recorded by TensorFlow Datasets (url_checksums/caltech_birds2011.txt, 1,150,585,339
# bytes) and torchvision's prototype CUB200 resource; its MD5 is 97eceeb196236b17998738112f37df78.
ARCHIVE = Archive(
    filename="CUB_200_2011.tgz",
    urls=(
        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
        "https://www.vision.caltech.edu/visipedia-data/CUB-200-2011/CUB_200_2011.tgz",
    ),
    sha256="0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
    folder=FOLDER,
)

# One image: its id in images.txt (None when the folders were scanned) and its file.
Record = tuple[str | None, Path]


def ensure_cub(root: Path, download: bool) -> Path:
    """``root/CUB_200_2011``, downloaded and unpacked first if its images are missing."""
    folder = root / FOLDER
    if (folder / "images").is_dir():
        return folder
    if not download:
        raise DataError(
            f"CUB-200-2011 folder {folder / 'images'} is missing; set dataset.download=true to "
            f"fetch {ARCHIVE.urls[0]}, or unpack CUB_200_2011.tgz into {root}"
        )
    if folder.exists():
        raise DataError(
            f"{folder} exists but has no images/ folder; delete it to download CUB-200-2011 again"
        )
    log.info("downloading %s into %s", ARCHIVE.filename, root)
    return download_and_extract(ARCHIVE, root)


def read_table(path: Path, columns: int) -> dict[str, list[str]]:
    """``<id> <value> ...`` lines of an official text file as ``{id: [values]}``."""
    table: dict[str, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not readable ({error})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != columns:
            raise DataError(
                f"{path} line {number} has {len(fields)} fields, expected {columns}: {line!r}"
            )
        table[fields[0]] = fields[1:]
    return table


def list_images(folder: Path) -> dict[str, list[Record]]:
    """``{"NNN.Class_name": [(id, jpg), ...]}``, classes and files sorted, from ``images.txt``
    (every listed file must exist) or, without it, from the class folders."""
    images = folder / "images"
    listing = folder / "images.txt"
    records: list[Record]
    if listing.is_file():
        records = [(i, images / v[0]) for i, v in read_table(listing, 2).items()]
        for _, path in records:
            if not path.is_file():
                raise DataError(f"{path} is listed in {listing} but missing")
    else:
        records = [(None, jpg) for jpg in images.glob("*/*.jpg")]
    by_class: dict[str, list[Record]] = {}
    for record in sorted(records, key=lambda r: r[1]):
        by_class.setdefault(record[1].parent.name, []).append(record)
    if not by_class:
        raise DataError(f"{images} holds no <NNN.Class_name>/*.jpg files")
    return dict(sorted(by_class.items()))


def crop_boxes(folder: Path) -> dict[str, tuple[float, float, float, float]]:
    """``{id: (left, top, right, bottom)}`` from the official ``bounding_boxes.txt``."""
    boxes = {}
    path = folder / "bounding_boxes.txt"
    if not path.is_file():
        raise DataError(f"{path} is missing; it is needed for dataset.bounding_box_crop=true")
    for image_id, values in read_table(path, 5).items():
        try:
            x, y, w, h = (float(v) for v in values)
        except ValueError:
            raise DataError(f"{path}: the box of image {image_id} is not numeric") from None
        boxes[image_id] = (x, y, x + w, y + h)
    return boxes


def load_image(path: Path, box: tuple[float, float, float, float] | None) -> Image.Image:
    """The RGB image at ``path``, cropped to ``box`` (clipped to the image) when given."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path} is not a readable image ({error})") from None
    if box is not None:
        left, top, right, bottom = box
        left, top = max(0, round(left)), max(0, round(top))
        right, bottom = min(image.width, round(right)), min(image.height, round(bottom))
        if right > left and bottom > top:
            image = image.crop((left, top, right, bottom))
    return image


def decode_cub(
    folder: Path, image_format: ImageFormat, bounding_box_crop: bool, cache_dir: Path | None
) -> ClassImages:
    """Every class under ``folder/images`` as ``ClassImages``, from the cache when current."""
    by_class = list_images(folder)
    records = [record for members in by_class.values() for record in members]
    tables = ("images.txt", "bounding_boxes.txt") if bounding_box_crop else ("images.txt",)
    paths = [path for _, path in records] + [folder / t for t in tables if (folder / t).is_file()]
    key = cache_key(
        {
            "format": image_format.__dict__,
            "crop": bounding_box_crop,
            "files": files_fingerprint(folder, paths),
        }
    )

    def build() -> dict:
        if bounding_box_crop and records[0][0] is None:
            raise DataError(
                f"{folder / 'images.txt'} is missing; it is needed for "
                f"dataset.bounding_box_crop=true"
            )
        boxes = crop_boxes(folder) if bounding_box_crop else {}
        log.info(
            "decoding %d CUB-200-2011 images from %s (once; cached after)", len(records), folder
        )
        images = torch.empty(len(records), *image_format.shape, dtype=torch.uint8)
        for row, (image_id, path) in enumerate(records):
            box = None
            if bounding_box_crop:
                if image_id not in boxes:
                    raise DataError(f"{folder / 'bounding_boxes.txt'} has no box for {path}")
                box = boxes[image_id]
            images[row] = image_format.encode(load_image(path, box))
        counts = torch.tensor([len(members) for members in by_class.values()])
        return {"images": images, "counts": counts, "names": list(by_class)}

    entry = cached("cub", key, build, cache_dir)
    return ClassImages(entry["images"], entry["counts"], entry["names"])


def chen_split(classes: ClassImages, folder: Path) -> dict[Split, ClassImages]:
    """The 100/50/50 class split of Chen et al. (2019) over the classes present."""
    listing = json.loads(files("metarun.data").joinpath(f"splits/{SPLIT_FILE}").read_text())
    official = {name for split in SPLITS for name in listing[split]}
    unknown = [name for name in classes.names if name not in official]
    if unknown:
        raise DataError(
            f"{folder / 'images' / unknown[0]} is not one of the 200 CUB-200-2011 class folders "
            f"(001.Black_footed_Albatross ... 200.Common_Yellowthroat)"
        )
    if len(classes.names) < len(official):
        log.warning(
            "%s holds %d of the 200 CUB-200-2011 classes", folder / "images", len(classes.names)
        )
    index = {name: i for i, name in enumerate(classes.names)}
    return {
        split: classes.select([index[n] for n in listing[split] if n in index]) for split in SPLITS
    }


class CUB(ImageDataset):
    """CUB-200-2011 episodes under the split of Chen et al. (options: ``ImageDataset``)."""

    def __init__(
        self,
        root: str,
        download: bool = False,
        image_size: int = 84,
        bounding_box_crop: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(ImageFormat(size=image_size, channels=3), **options)
        self.root = Path(root).expanduser()
        self.download = download
        self.bounding_box_crop = bool(bounding_box_crop)

    def load_splits(self) -> dict[Split, ClassImages]:
        folder = ensure_cub(self.root, self.download)
        classes = decode_cub(folder, self.image_format, self.bounding_box_crop, self.cache_dir)
        return chen_split(classes, folder)


__all__ = ["ARCHIVE", "CUB", "chen_split", "decode_cub", "ensure_cub"]
