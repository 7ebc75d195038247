"""Your own images: any folder of ``<root>/<class>/<image>`` or ``<root>/<group>/<class>/<image>``.

The way to meta-learn on data no module here knows. Each class folder is one class (as in the
N-way K-shot protocol of Vinyals et al. 2016, "Matching Networks for One Shot Learning"); in the
grouped layout class names are ``group/class``, so ``within_group`` episodes draw every episode
from one group, as Lake et al. (2015) do with Omniglot alphabets. The tree is decoded once into
a uint8 tensor cache keyed by every file's path, size and modification time and by the image
format, so adding, removing or editing an image rebuilds it.

The split into meta-train, validation and test classes is given either as lists of class (or
group) names, inline or in a ``.txt``/``.json`` file, or as seeded ratios over classes or over
whole groups (``FolderSplit``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from metarun.data.cache import cache_key, cached, files_fingerprint
from metarun.data.decode_pool import decode_files
from metarun.data.episodes import ClassImages
from metarun.data.image_dataset import SPLITS, ImageDataset, Split
from metarun.data.images import ImageFormat
from metarun.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
Layout = Literal["classes", "groups"]
LAYOUTS = ("auto", "classes", "groups")
# How deep an image lies in each layout: root/<class>/<image> is 2 parts, root/g/c/<image> 3.
DEPTHS: dict[Layout, int] = {"classes": 2, "groups": 3}
PATTERNS: dict[Layout, str] = {"classes": "<class>/<image>", "groups": "<group>/<class>/<image>"}
SPLIT_KEYS = ("train", "val", "test", "ratios", "seed", "by")
DEFAULT_RATIOS = (0.64, 0.16, 0.20)


def expected_layout(root: Path) -> str:
    return f"{root}/{PATTERNS['classes']} or {root}/{PATTERNS['groups']}"


# --------------------------------------------------------------------------- scanning the tree


def image_files(root: Path) -> dict[int, list[Path]]:
    """Every image under ``root`` by depth (path parts below ``root``), sorted; hidden files and
    folders are skipped, and nothing deeper than one level past the grouped layout is read."""
    by_depth: dict[int, list[Path]] = {}
    deepest = DEPTHS["groups"] + 1
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        depth = len(Path(folder).relative_to(root).parts)
        dirnames[:] = [] if depth + 1 >= deepest else [d for d in dirnames if d[0] != "."]
        for name in filenames:
            if name[0] != "." and name.lower().endswith(IMAGE_SUFFIXES):
                by_depth.setdefault(depth + 1, []).append(Path(folder, name))
    return {depth: sorted(paths) for depth, paths in sorted(by_depth.items())}


def resolve_layout(root: Path, layout: str, by_depth: dict[int, list[Path]]) -> Layout:
    """The configured layout, or for ``auto`` the one the images' depth shows; ``auto`` refuses
    a tree whose images lie at more than one depth, naming one that does not fit."""
    if layout != "auto":
        return layout  # type: ignore[return-value]
    named = {depth: name for name, depth in DEPTHS.items()}
    fitting = [depth for depth in by_depth if depth in named]
    if not fitting:  # e.g. every image directly under root
        raise DataError(
            f"dataset.root: {next(iter(by_depth.values()))[0]} does not fit the layout "
            f"{expected_layout(root)}; move the images into class folders"
        )
    majority = max(fitting, key=lambda depth: len(by_depth[depth]))
    if len(by_depth) == 1:
        return named[majority]
    odd = next(paths[0] for depth, paths in by_depth.items() if depth != majority)
    name = named[majority]
    raise DataError(
        f"dataset.root: {odd} does not fit the {name} layout ({root}/{PATTERNS[name]}) of "
        f"the other images; move it, or set dataset.layout to read only one depth"
    )


def scan_tree(root: Path, layout: str) -> tuple[Layout, dict[str, list[Path]]]:
    """The resolved layout and ``{class name: [image, ...]}``, names and images sorted."""
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(
            f"dataset.root: {root} {what}; expected image files as {expected_layout(root)}"
        )
    by_depth = image_files(root)
    if not by_depth:
        raise DataError(
            f"dataset.root: {root} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
            f"expected {expected_layout(root)}"
        )
    resolved = resolve_layout(root, layout, by_depth)
    depth = DEPTHS[resolved]
    ignored = sum(len(paths) for d, paths in by_depth.items() if d != depth)
    if ignored:
        log.warning(
            "ignoring %d images not at %s/%s (dataset.layout=%s)",
            ignored,
            root,
            PATTERNS[resolved],
            resolved,
        )
    classes: dict[str, list[Path]] = {}
    for path in by_depth.get(depth, []):
        classes.setdefault(path.parent.relative_to(root).as_posix(), []).append(path)
    if not classes:
        raise DataError(
            f"dataset.root: {root} holds no images at {root}/{PATTERNS[resolved]} "
            f"(dataset.layout={resolved})"
        )
    return resolved, dict(sorted(classes.items()))


def decode_tree(
    root: Path, layout: str, image_format: ImageFormat, cache_dir: Path | None
) -> tuple[Layout, ClassImages]:
    """Every class of the tree as ``ClassImages``, from the cache when it is current."""
    resolved, classes = scan_tree(root, layout)
    all_files = [path for paths in classes.values() for path in paths]
    key = cache_key(
        {
            "format": image_format.__dict__,
            "layout": resolved,
            "files": files_fingerprint(root, all_files),
        }
    )

    def build() -> dict:
        log.info("decoding %d images from %s (once; cached after)", len(all_files), root)
        images = decode_files(all_files, image_format, "images")
        counts = torch.tensor([len(paths) for paths in classes.values()])
        return {"images": images, "counts": counts, "names": list(classes)}

    entry = cached(f"folder-{resolved}", key, build, cache_dir)
    return resolved, ClassImages(entry["images"], entry["counts"], entry["names"])


# --------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class FolderSplit:
    """``dataset.split``: class lists (``train``/``val``/``test``, at most one left ``null`` for
    the remaining classes) or, when all three are ``null``, seeded ``ratios`` by class or group.

    A list holds class or group names (a group stands for all its classes), or is the path of a
    ``.txt`` file (one name a line) or ``.json`` file (a list, or an object keyed by split).
    """

    lists: dict[Split, Any]
    ratios: tuple[float, float, float]
    seed: int
    by: Literal["class", "group"]

    @staticmethod
    def of(config: Mapping[str, Any] | None) -> FolderSplit:
        """Validated from the config mapping (names are checked later, against the tree)."""
        config = dict(config or {})
        unknown = sorted(set(config) - set(SPLIT_KEYS))
        if unknown:
            raise ConfigError(
                f"dataset.split.{unknown[0]}", f"unknown key; valid keys: {', '.join(SPLIT_KEYS)}"
            )
        by = config.get("by") or "class"
        if by not in ("class", "group"):
            raise ConfigError("dataset.split.by", f"must be 'class' or 'group', got {by!r}")
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError("dataset.split.seed", f"must be an integer, got {seed!r}")
        lists: dict[Split, Any] = {s: config.get(s) for s in SPLITS}
        given = [s for s in SPLITS if lists[s] is not None]
        if given and len(given) < 2:
            missing = " and ".join(f"dataset.split.{s}" for s in SPLITS if s not in given)
            raise ConfigError(
                missing,
                f"list these classes too (one list may stay null for the remaining classes), "
                f"or set dataset.split.{given[0]}=null to split by dataset.split.ratios",
            )
        ratios = config.get("ratios", DEFAULT_RATIOS)
        if ratios is None and given:  # ratios=null beside class lists: nothing to validate
            ratios = DEFAULT_RATIOS
        return FolderSplit(lists, valid_ratios(ratios), seed, by)

    @property
    def uses_lists(self) -> bool:
        return any(value is not None for value in self.lists.values())

    def apply(self, classes: ClassImages, layout: Layout, root: Path) -> dict[Split, ClassImages]:
        if self.uses_lists:
            members = self._listed(classes, layout, root)
        else:
            members = self._by_ratio(classes, layout)
        index = {name: i for i, name in enumerate(classes.names)}
        return {s: classes.select([index[n] for n in sorted(members[s])]) for s in SPLITS}

    def _listed(self, classes: ClassImages, layout: Layout, root: Path) -> dict[Split, set[str]]:
        groups = set(classes.groups) if layout == "groups" else set()
        known = set(classes.names)
        members: dict[Split, set[str]] = {}
        owner: dict[str, Split] = {}
        for split in SPLITS:
            if self.lists[split] is None:
                continue
            key = f"dataset.split.{split}"
            names = listed_names(self.lists[split], key, root, split)
            if not names:
                raise ConfigError(key, "is empty; list at least one class or group")
            chosen: set[str] = set()
            for name in names:
                if name in groups:
                    chosen |= {c for c in classes.names if c.split("/", 1)[0] == name}
                elif name in known:
                    chosen.add(name)
                else:
                    raise ConfigError(
                        key, f"unknown class {name!r}; {known_names(classes, layout)}"
                    )
            for name in sorted(chosen):
                if name in owner:
                    raise ConfigError(
                        key,
                        f"class {name!r} is also in dataset.split.{owner[name]}; "
                        f"the lists must be disjoint",
                    )
                owner[name] = split
            members[split] = chosen
        for split in SPLITS:
            if split not in members:
                members[split] = set(classes.names) - set(owner)
                if not members[split]:
                    raise ConfigError(
                        f"dataset.split.{split}",
                        "is null, meaning the remaining classes, but the other lists take "
                        "every class; list fewer classes there",
                    )
        return members

    def _by_ratio(self, classes: ClassImages, layout: Layout) -> dict[Split, set[str]]:
        if self.by == "group" and layout != "groups":
            raise ConfigError(
                "dataset.split.by",
                "is 'group' but the tree has the classes layout (<root>/<class>/<image>), so "
                "there are no groups; use split.by=class or a <root>/<group>/<class>/<image> tree",
            )
        units: dict[str, list[str]] = {}
        for name, group in zip(classes.names, classes.groups, strict=True):
            units.setdefault(group if self.by == "group" else name, []).append(name)
        order = torch.randperm(len(units), generator=torch.Generator().manual_seed(self.seed))
        shuffled = [list(units.values())[i] for i in order.tolist()]
        cuts = ratio_cuts([len(u) for u in shuffled], self.ratios)
        members: dict[Split, set[str]] = {}
        for split, start, stop in zip(SPLITS, [0, *cuts], [*cuts, len(shuffled)], strict=True):
            if start == stop:
                unit = "groups" if self.by == "group" else "classes"
                of = f" ({classes.num_classes} classes)" if self.by == "group" else ""
                raise ConfigError(
                    "dataset.split.ratios",
                    f"{list(self.ratios)} leave the {split} split empty: there are only "
                    f"{len(shuffled)} {unit}{of}; give the {split} "
                    f"split a larger ratio, add {unit}, or list the classes (dataset.split.train/"
                    f"val/test)",
                )
            members[split] = {name for unit in shuffled[start:stop] for name in unit}
        return members


def valid_ratios(value: Any) -> tuple[float, float, float]:
    """Three positive fractions that sum to 1."""
    key = "dataset.split.ratios"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 3:
        raise ConfigError(key, f"must be three fractions [train, val, test], got {value!r}")
    try:
        ratios = tuple(float(r) for r in value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be three numbers, got {list(value)!r}") from None
    if min(ratios) <= 0 or abs(sum(ratios) - 1.0) > 1e-6:
        raise ConfigError(
            key, f"must be three positive fractions that sum to 1, got {list(ratios)}"
        )
    return ratios  # type: ignore[return-value]


def ratio_cuts(sizes: list[int], ratios: tuple[float, ...]) -> list[int]:
    """Where to cut a sequence of units (classes or whole groups of ``sizes`` classes) so each
    part's share of the classes is as close as the units allow to its ratio."""
    total = sum(sizes)
    cumulative = [0]
    for size in sizes:
        cumulative.append(cumulative[-1] + size)
    cuts, target, start = [], 0.0, 0
    for ratio in ratios[:-1]:
        target += ratio * total
        start = min(range(start, len(sizes) + 1), key=lambda i: abs(cumulative[i] - target))
        cuts.append(start)
    return cuts


def listed_names(value: Any, key: str, root: Path, split: Split) -> list[str]:
    """The names a list key holds: inline, one name (as ``split.val=Latin`` arrives), or a
    ``.txt``/``.json`` file (relative to the working directory, else to ``dataset.root``)."""
    if isinstance(value, str) and value.lower().endswith((".txt", ".json")):
        return names_from_file(value, key, root, split)
    if isinstance(value, str | int):
        return [str(value)]
    if isinstance(value, Sequence):
        return [str(name) for name in value]
    raise ConfigError(key, f"must be a list of class names or a .txt/.json file, got {value!r}")


def names_from_file(value: str, key: str, root: Path, split: Split) -> list[str]:
    given = Path(value).expanduser()
    candidates = [given] if given.is_absolute() else [given, root / given]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ConfigError(
            key, f"names a file that does not exist: {' or '.join(str(p) for p in candidates)}"
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        lines = (line.strip() for line in text.splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error})") from None
    if isinstance(data, dict):
        if split not in data:
            raise DataError(f"{path} has no {split!r} entry (it has: {', '.join(map(str, data))})")
        data = data[split]
    if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
        raise DataError(f"{path} must hold a list of names, or an object of lists by split")
    return data


def known_names(classes: ClassImages, layout: Layout, shown: int = 8) -> str:
    """What a list may name, abbreviated for a one-line error."""
    names = sorted(set(classes.groups)) if layout == "groups" else classes.names
    what = "groups" if layout == "groups" else "classes"
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    extra = " or classes as group/class" if layout == "groups" else ""
    return f"valid: the {what} {', '.join(names[:shown])}{more}{extra}"


# --------------------------------------------------------------------------- the data set


class ImageFolder(ImageDataset):
    """Episodes from a user's image tree (shared options: ``ImageDataset``)."""

    def __init__(
        self,
        root: str,
        layout: str = "auto",
        split: Mapping[str, Any] | None = None,
        image_size: int = 84,
        channels: int = 3,
        invert: bool = False,
        **options: Any,
    ) -> None:
        if layout not in LAYOUTS:
            raise ConfigError(
                "dataset.layout", f"must be one of {', '.join(LAYOUTS)}, got {layout!r}"
            )
        if channels not in (1, 3):
            raise ConfigError(
                "dataset.channels", f"must be 1 (grayscale) or 3 (RGB), got {channels!r}"
            )
        fmt = ImageFormat(size=image_size, channels=channels, invert=bool(invert))
        super().__init__(fmt, **options)
        self.root = Path(root).expanduser()
        self.layout = layout
        self.split = FolderSplit.of(split)

    def load_splits(self) -> dict[Split, ClassImages]:
        layout, classes = decode_tree(self.root, self.layout, self.image_format, self.cache_dir)
        splits = self.split.apply(classes, layout, self.root)
        log.info(
            "%s (%s layout): %s classes",
            self.root,
            layout,
            "/".join(str(splits[s].num_classes) for s in SPLITS),
        )
        return splits


__all__ = ["FolderSplit", "ImageFolder", "decode_tree", "scan_tree"]
