"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015, Science 350(6266)): 1623 handwritten
characters from 50 alphabets, 20 drawings each.

Reads the official layout, ``<root>/<folder>/<alphabet>/<character>/<drawing>.png`` for the
folders ``images_background``, ``images_evaluation``, ``images_background_small1`` and
``images_background_small2``, downloading a missing folder's official zip when asked. Every
folder is decoded once into a uint8 tensor cache.

Two split schemes, both explicit and seeded (never the global RNG):

* ``lake``: alphabets of ``background`` meta-train, alphabets of ``evaluation`` test, and
  ``val_alphabets`` background alphabets are held out for validation. An alphabet in both folders
  (Greek and Latin in the two small folders) is never a test alphabet; it stays with the
  background alphabets (and may be held out for validation).
* ``vinyals``: the character split of Vinyals et al. (2016) as shipped with Ravi & Larochelle
  (2017) and Snell et al. (2017), 1028/172/423 characters over both official folders. Its
  training split contains alphabets that Lake's protocol evaluates on.

Rotations by 90, 180 and 270 degrees add new classes (x4), for training (``rotate``) and, as
in the Vinyals protocol, for validation and test (``rotate_eval``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from metarun.data.cache import cache_key, cached, files_fingerprint
from metarun.data.decode_pool import decode_files
from metarun.data.download import Archive, download_and_extract
from metarun.data.episodes import ClassImages
from metarun.data.image_dataset import ImageDataset, Split
from metarun.data.images import ImageFormat
from metarun.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_MIRRORS = (
    "https://github.com/brendenlake/omniglot/raw/master/python/{}",
    "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{}",
)
# SHA-256 of the official zips (the same digests TensorFlow Datasets records for them).
_SHA256 = {
    "images_background": "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
    "images_evaluation": "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
    "images_background_small1": "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2": "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}
ARCHIVES: dict[str, Archive] = {
    folder: Archive(
        filename=f"{folder}.zip",
        urls=tuple(mirror.format(f"{folder}.zip") for mirror in _MIRRORS),
        sha256=digest,
        folder=folder,
    )
    for folder, digest in _SHA256.items()
}
ROTATIONS = (0, 90, 180, 270)


def held_out_alphabets(value: object) -> int | list[str]:
    """``dataset.val_alphabets``: a count (chosen with ``split_seed``) or alphabet names."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(
            "dataset.val_alphabets",
            f"must be a number of alphabets or a list of alphabet names, got {value!r}",
        )
    if isinstance(value, int):
        return value
    if isinstance(value, str):  # one name, as `dataset.val_alphabets=Latin` arrives
        return [value]
    return [str(name) for name in value]  # type: ignore[union-attr]


def ensure_folder(root: Path, folder: str, download: bool, archives: dict[str, Archive]) -> Path:
    """``root/folder``, downloaded first if it is missing and ``download`` is set."""
    path = root / folder
    if path.is_dir():
        return path
    if folder not in archives:
        raise DataError(
            f"Omniglot folder {path} is missing, and {folder!r} is not an official folder that "
            f"could be downloaded (official: {', '.join(sorted(archives))})"
        )
    if not download:
        raise DataError(
            f"Omniglot folder {path} is missing; set dataset.download=true to fetch "
            f"{archives[folder].urls[0]}, or set dataset.root to a directory that holds {folder}/"
        )
    log.info("downloading %s into %s", archives[folder].filename, root)
    return download_and_extract(archives[folder], root)


def scan_folder(path: Path) -> dict[str, list[Path]]:
    """``{"Alphabet/characterNN": [png, ...]}`` for one official folder, sorted."""
    characters = {
        f"{character.parent.name}/{character.name}": sorted(character.glob("*.png"))
        for character in sorted(path.glob("*/*"))
        if character.is_dir()
    }
    characters = {name: pngs for name, pngs in characters.items() if pngs}
    if not characters:
        raise DataError(
            f"{path} holds no <alphabet>/<character>/<drawing>.png files; is it an unpacked "
            f"official Omniglot folder?"
        )
    return characters


def decode_folder(path: Path, image_format: ImageFormat, cache_dir: Path | None) -> ClassImages:
    """Every character of a folder as ``ClassImages``, from the cache when it is current."""
    characters = scan_folder(path)
    all_files = [png for pngs in characters.values() for png in pngs]
    key = cache_key({"format": image_format.__dict__, "files": files_fingerprint(path, all_files)})

    def build() -> dict:
        log.info("decoding %d Omniglot images from %s (once; cached after)", len(all_files), path)
        images = decode_files(all_files, image_format, "Omniglot images")
        counts = torch.tensor([len(pngs) for pngs in characters.values()])
        return {"images": images, "counts": counts, "names": list(characters)}

    entry = cached(f"omniglot-{path.name}", key, build, cache_dir)
    return ClassImages(entry["images"], entry["counts"], entry["names"])


def alphabet_of(name: str) -> str:
    return name.split("/", 1)[0]


def rotated(classes: ClassImages) -> ClassImages:
    """Each class four times, rotated by 0/90/180/270 degrees: rotations are new classes."""
    parts = []
    for degrees in ROTATIONS:
        images = torch.rot90(classes.images, k=degrees // 90, dims=(-2, -1)).contiguous()
        names = [f"{name}/rot{degrees:03d}" for name in classes.names]
        parts.append(ClassImages(images, classes.counts, names))
    return ClassImages.concat(parts)


def where(classes: ClassImages, keep: Callable[[str], bool]) -> ClassImages:
    """The classes whose name ``keep`` accepts, in their current order."""
    return classes.select([i for i, name in enumerate(classes.names) if keep(name)])


def lake_split(
    background: ClassImages, evaluation: ClassImages, val_alphabets: int | list[str], seed: int
) -> dict[Split, ClassImages]:
    """Meta-train on background alphabets, test on evaluation alphabets, validate on a few
    background alphabets held out with a seeded choice (or named explicitly)."""
    train_alphabets = sorted({alphabet_of(n) for n in background.names})
    test_alphabets = {alphabet_of(n) for n in evaluation.names} - set(train_alphabets)
    if isinstance(val_alphabets, int):
        if not 0 < val_alphabets < len(train_alphabets):
            raise ConfigError(
                "dataset.val_alphabets",
                f"must hold out between 1 and {len(train_alphabets) - 1} of the "
                f"{len(train_alphabets)} background alphabets, got {val_alphabets}",
            )
        order = torch.randperm(len(train_alphabets), generator=torch.Generator().manual_seed(seed))
        held_out = {train_alphabets[i] for i in order[:val_alphabets].tolist()}
    else:
        held_out = set(val_alphabets)
        unknown = held_out - set(train_alphabets)
        if unknown or not held_out or held_out == set(train_alphabets):
            raise ConfigError(
                "dataset.val_alphabets",
                f"must name some, not all, background alphabets ({', '.join(train_alphabets)}); "
                f"got {sorted(held_out)}",
            )
    if not test_alphabets:
        raise ConfigError(
            "dataset.evaluation",
            "every alphabet of the evaluation folder is also a background alphabet, so nothing "
            "is left to test on; choose an evaluation folder with other alphabets",
        )
    log.info("Lake split: validation alphabets %s", ", ".join(sorted(held_out)))
    return {
        "train": where(background, lambda n: alphabet_of(n) not in held_out),
        "val": where(background, lambda n: alphabet_of(n) in held_out),
        "test": where(evaluation, lambda n: alphabet_of(n) in test_alphabets),
    }


def vinyals_split(characters: ClassImages) -> dict[Split, ClassImages]:
    """The fixed 1028/172/423 character split of Vinyals et al. (2016)."""
    listing = json.loads(files("metarun.data").joinpath("splits/omniglot_vinyals.json").read_text())
    splits: dict[Split, ClassImages] = {}
    for split in ("train", "val", "test"):
        entries = set(listing[split])
        splits[split] = where(characters, lambda n, e=entries: n in e or alphabet_of(n) in e)
    return splits


class Omniglot(ImageDataset):
    """Omniglot episodes under a chosen split scheme (shared options: ``ImageDataset``)."""

    def __init__(
        self,
        root: str,
        download: bool = False,
        split: str = "lake",
        background: str = "images_background",
        evaluation: str = "images_evaluation",
        val_alphabets: int | list[str] = 5,
        split_seed: int = 0,
        rotate: bool = True,
        rotate_eval: bool = False,
        image_size: int = 28,
        **options: Any,
    ) -> None:
        if split not in ("lake", "vinyals"):
            raise ConfigError("dataset.split", f"must be 'lake' or 'vinyals', got {split!r}")
        super().__init__(ImageFormat(size=image_size, channels=1, invert=True), **options)
        self.root = Path(root).expanduser()
        self.download = download
        self.split = split
        self.folders = (background, evaluation)
        self.val_alphabets = held_out_alphabets(val_alphabets)
        self.split_seed = split_seed
        self.rotate = {"train": rotate, "val": rotate_eval, "test": rotate_eval}
        self._rotated: dict[Split, ClassImages] = {}

    def classes(self, split: Split) -> ClassImages:
        if not self.rotate[split]:
            return super().classes(split)
        if split not in self._rotated:
            self._rotated[split] = rotated(super().classes(split))
        return self._rotated[split]

    def load_splits(self) -> dict[Split, ClassImages]:
        background, evaluation = (
            decode_folder(
                ensure_folder(self.root, folder, self.download, ARCHIVES),
                self.image_format,
                self.cache_dir,
            )
            for folder in self.folders
        )
        if self.split == "lake":
            splits = lake_split(background, evaluation, self.val_alphabets, self.split_seed)
        else:
            known = set(background.names)
            extra = [i for i, n in enumerate(evaluation.names) if n not in known]
            splits = vinyals_split(ClassImages.concat([background, evaluation.select(extra)]))
        for split, classes in splits.items():
            if classes.num_classes == 0:
                raise ConfigError(
                    "dataset.split",
                    f"the {self.split} split has no {split} characters in "
                    f"{', '.join(self.folders)} under {self.root}; the vinyals split needs "
                    f"images_background and images_evaluation",
                )
        return splits
