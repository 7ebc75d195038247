"""Kanji: an offline, Omniglot-like benchmark rendered from KanjiVG's stroke paths.

KanjiVG (Ulrich Apel and contributors, https://kanjivg.tagaini.net, CC BY-SA 3.0) describes
about 6,400 CJK characters as SVG strokes; the ``kanjivg`` package on PyPI ships them, so this
data set needs no download. Each character is a class, drawn ``drawings`` times (20, like
Omniglot's 20 drawers) by ``metarun.data.strokes``: every drawing its own random hand, the same
bytes for the same seed on every machine. Hands vary as ``renderer`` says: ``handwriting``
(``metarun.data.handwriting``: BPL's motor noise with spreads fitted to Omniglot's drawers, at
their size and pen width) or ``classic`` (``strokes.Distortion``: the renderer before it and
still the default, so old results reproduce). The radical KanjiVG marks is the character's group,
the alphabet of this benchmark (``within_group`` episodes), and the train/val/test split
ships as ``splits/kanji.json``: whole radicals per split (64/16/20% of the characters), as
Lake et al. hold out whole alphabets (``scripts/make_kanji_split.py`` wrote it).

Drawings are rendered once, in parallel, and cached keyed by the rendering parameters, the
renderer's version and the KanjiVG release, so other parameters never read a stale cache.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from functools import cache, lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from metarun.data.cache import cache_key, cached
from metarun.data.episodes import ClassImages
from metarun.data.handwriting import Handwriting
from metarun.data.image_dataset import SPLITS, ImageDataset, Split
from metarun.data.images import ImageFormat
from metarun.data.strokes import Distortion, Hand, Stroke, Style, parse_path, render
from metarun.errors import ConfigError, DataError

log = logging.getLogger(__name__)

RENDERER_VERSION = 1  # bump when a change to strokes.py changes what a drawing looks like
HANDWRITING_VERSION = 1  # bump when a change to handwriting.py changes what a drawing looks like
RENDERERS = {"handwriting": Handwriting, "classic": Distortion}
_SVG = "{http://www.w3.org/2000/svg}"
_CHUNK = 32  # characters per rendering task


def kanjivg_version() -> str:
    try:
        return distribution("kanjivg").version
    except PackageNotFoundError:
        raise DataError(
            "dataset=kanji needs the kanjivg package (the KanjiVG stroke data); install it "
            "with: pip install kanjivg"
        ) from None


@lru_cache(maxsize=1)
def glyph_files() -> dict[str, Path]:
    """``{"0672c": path}``: KanjiVG's standard (non-variant) SVG of each character."""
    kanjivg_version()
    folder = Path(str(distribution("kanjivg").locate_file("kanji")))
    found = {path.stem: path for path in folder.glob("*.svg") if "-" not in path.stem}
    if not found:
        raise DataError(f"the kanjivg package has no SVG files in {folder}; reinstall kanjivg")
    return found


@cache
def stroke_count(code: str) -> int:
    """How many strokes KanjiVG draws the character with (its ``<path>`` elements)."""
    return glyph_files()[code].read_text("utf-8").count("<path ")


def is_ideograph(code: str) -> bool:
    """CJK unified ideographs (and extension A): kanji, not kana or punctuation."""
    value = int(code, 16)
    return 0x4E00 <= value <= 0x9FFF or 0x3400 <= value <= 0x4DBF


def read_strokes(svg: Path) -> list[Stroke]:
    """A character's strokes in writing order, one per ``<path>``."""
    try:
        paths = [p.get("d", "") for p in ET.parse(svg).iter(f"{_SVG}path")]
        strokes = [parse_path(d) for d in paths]
    except (ET.ParseError, ValueError, OSError) as error:
        raise DataError(f"{svg} is not a readable KanjiVG file ({error})") from None
    if not strokes:
        raise DataError(f"{svg} has no stroke paths")
    return strokes


def render_characters(
    svgs: list[Path],
    codes: list[str],
    seed: int,
    drawings: int,
    size: int,
    style: Style,
) -> np.ndarray:
    """``[len(codes) * drawings, size, size]`` uint8 drawings, character by character.

    Resized from 105x105 with PIL's Lanczos filter, as ``ImageFormat.encode`` resizes
    Omniglot's drawings (a test checks the two agree).
    """
    out = np.empty((len(codes) * drawings, size, size), dtype=np.uint8)
    for i, (svg, code) in enumerate(zip(svgs, codes, strict=True)):
        glyph = style.glyph(read_strokes(svg))
        bitmaps = render(glyph, Hand(seed, code), drawings, style)
        for k, bitmap in enumerate(bitmaps):
            image = Image.fromarray(bitmap, mode="L")
            if size != bitmap.shape[0]:
                image = image.resize((size, size), Image.Resampling.LANCZOS)
            out[i * drawings + k] = np.asarray(image)
    return out


def render_all(
    codes: list[str],
    seed: int,
    drawings: int,
    size: int,
    style: Style,
    workers: int,
) -> np.ndarray:
    """Every character's drawings, in ``codes`` order, rendered by ``workers`` processes."""
    svgs = [glyph_files()[code] for code in codes]
    chunks = [slice(start, start + _CHUNK) for start in range(0, len(codes), _CHUNK)]
    if workers <= 1 or len(chunks) == 1:
        return render_characters(svgs, codes, seed, drawings, size, style)
    # Forked where possible: spawning would re-run the user's script in every worker. The
    # workers use only NumPy and PIL, none of the parent's threads (PyTorch's pool).
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        parts = pool.map(
            render_characters,
            [svgs[c] for c in chunks],
            [codes[c] for c in chunks],
            *([value] * len(chunks) for value in (seed, drawings, size, style)),
        )
        return np.concatenate(list(parts))


def split_listing() -> dict[str, Any]:
    return json.loads(files("metarun.data").joinpath("splits/kanji.json").read_text("utf-8"))


def spread(items: list[str], limit: int | None) -> list[str]:
    """``limit`` items evenly spread over ``items`` (all of them for ``None``)."""
    if limit is None or limit >= len(items):
        return items
    return [items[round(i * (len(items) - 1) / max(1, limit - 1))] for i in range(limit)]


def _is_list(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, str | bytes | dict)


def style_from(renderer: str, value: Any) -> Style:
    """``dataset.renderer`` and ``dataset.distortion``: null for the renderer's defaults, or a
    mapping overriding some of them."""
    if renderer not in RENDERERS:
        raise ConfigError(
            "dataset.renderer", f"must be one of {', '.join(RENDERERS)}, got {renderer!r}"
        )
    kind = RENDERERS[renderer]
    if value is None:
        return kind()
    options = dict(value.items()) if hasattr(value, "items") else None
    if options is None:
        raise ConfigError("dataset.distortion", f"must be a mapping or null, got {value!r}")
    known = {f.name for f in fields(kind)}
    for key in options:
        if key not in known:
            raise ConfigError(
                f"dataset.distortion.{key}",
                f"is not a parameter of the {renderer} renderer; valid: {', '.join(sorted(known))}",
            )
    converted = {}
    for key, item in options.items():
        numbers = [item] if isinstance(item, int | float) else list(item) if _is_list(item) else []
        if not numbers or not all(
            isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
        ):
            raise ConfigError(f"dataset.distortion.{key}", f"must be a number, got {item!r}")
        converted[key] = item if isinstance(item, int | float) else tuple(numbers)
    try:
        return kind(**converted)
    except (ValueError, TypeError) as error:
        key, _, reason = str(error).partition(": ")
        if key in known:
            raise ConfigError(f"dataset.distortion.{key}", reason) from None
        raise ConfigError("dataset.distortion", str(error)) from None


class Kanji(ImageDataset):
    """Rendered KanjiVG characters under the shipped radical split (options: ``ImageDataset``)."""

    def __init__(
        self,
        seed: int = 0,
        drawings: int = 20,
        image_size: int = 28,
        characters_per_split: int | None = None,
        max_strokes: int | None = None,
        renderer: str = "classic",
        distortion: Any = None,
        workers: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(ImageFormat(size=image_size, channels=1, invert=True), **options)
        if drawings < 1:
            raise ConfigError("dataset.drawings", f"must be at least 1, got {drawings}")
        if characters_per_split is not None and characters_per_split < 1:
            raise ConfigError(
                "dataset.characters_per_split",
                f"must be null (all characters) or at least 1, got {characters_per_split}",
            )
        if max_strokes is not None and max_strokes < 1:
            raise ConfigError(
                "dataset.max_strokes",
                f"must be null (every character) or at least 1, got {max_strokes}",
            )
        if workers is not None and workers < 1:
            raise ConfigError("dataset.workers", f"must be null or at least 1, got {workers}")
        self.seed = seed
        self.drawings = drawings
        self.characters_per_split = characters_per_split
        self.max_strokes = max_strokes
        self.renderer = renderer
        self.style = style_from(renderer, distortion)
        self.workers = workers or min(os.cpu_count() or 1, 8)

    def split_names(self) -> dict[Split, list[str]]:
        """Each split's classes as ``radical/code``, limited by ``characters_per_split``."""
        listing = split_listing()
        available = glyph_files()
        installed = kanjivg_version()
        if listing["kanjivg"] != installed:
            log.warning(
                "the kanji split was made from KanjiVG %s but %s is installed; characters "
                "it lacks are left out",
                listing["kanjivg"],
                installed,
            )
        names: dict[Split, list[str]] = {}
        for split in SPLITS:
            every = [
                f"{radical}/{code}"
                for radical, codes in sorted(listing["splits"][split].items())
                for code in codes
                if code in available
                and (self.max_strokes is None or stroke_count(code) <= self.max_strokes)
            ]
            names[split] = spread(every, self.characters_per_split)
        return names

    def load_splits(self) -> dict[Split, ClassImages]:
        names = self.split_names()
        ordered = [name for split in SPLITS for name in names[split]]
        codes = [name.split("/", 1)[1] for name in ordered]
        size = self.image_format.size
        key = cache_key(
            {
                # The classic renderer's key is the one it had before there was a choice.
                "renderer": RENDERER_VERSION
                if self.renderer == "classic"
                else f"handwriting-{HANDWRITING_VERSION}",
                "kanjivg": kanjivg_version(),
                "seed": self.seed,
                "drawings": self.drawings,
                "size": size,
                "distortion": self.style.fingerprint(),
                "characters": ordered,
            }
        )

        def build() -> dict[str, Any]:
            log.info(
                "rendering %d kanji x %d drawings (%s) at %dx%d with %d processes (once; "
                "cached after)",
                len(codes),
                self.drawings,
                self.renderer,
                size,
                size,
                self.workers,
            )
            pixels = render_all(codes, self.seed, self.drawings, size, self.style, self.workers)
            images = torch.from_numpy(pixels).unsqueeze(1)
            return {
                "images": images,
                "counts": torch.full((len(codes),), self.drawings),
                "names": ordered,
            }

        entry = cached("kanji", key, build, self.cache_dir)
        everything = ClassImages(entry["images"], entry["counts"], entry["names"])
        position = {name: i for i, name in enumerate(everything.names)}
        return {split: everything.select([position[n] for n in names[split]]) for split in SPLITS}


__all__ = ["Kanji", "glyph_files", "is_ideograph", "read_strokes", "render_all"]
