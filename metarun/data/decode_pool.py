"""Decoding many small encoded images (JPEG, PNG) into one uint8 tensor with a thread pool.

Pillow releases the GIL while it inflates and decodes, so threads use every core without
copying the encoded bytes into other processes. Work goes in chunks, so progress is logged and
the pool never holds more than a chunk of decoded images that are not yet in the output.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from metarun.data.images import ImageFormat
from metarun.errors import DataError

log = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK = 8192


def default_workers() -> int:
    """One thread per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def decode_all(
    items: Sequence[T],
    decode: Callable[[T], Tensor],
    image_format: ImageFormat,
    what: str,
    workers: int | None = None,
) -> Tensor:
    """``[len(items), C, H, W]`` uint8: ``decode(item)`` for every item, on ``workers`` threads."""
    images = torch.empty(len(items), *image_format.shape, dtype=torch.uint8)
    workers = workers or default_workers()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            for offset, pixels in enumerate(pool.map(decode, chunk)):
                images[start + offset] = pixels
            done = start + len(chunk)
            if done < len(items):
                log.info("decoded %d of %d %s", done, len(items), what)
    log.info(
        "decoded %d %s in %.1f s on %d threads",
        len(items),
        what,
        time.monotonic() - started,
        workers,
    )
    return images


def decode_bytes(data: bytes, image_format: ImageFormat, name: str) -> Tensor:
    """One encoded image (any format Pillow reads) as the stored ``[C, H, W]`` uint8 tensor."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image_format.encode(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        message = " ".join(str(error).split())
        raise DataError(f"{name} is not a readable image ({message})") from None


def decode_file(path: Path, image_format: ImageFormat) -> Tensor:
    """One image file as the stored ``[C, H, W]`` uint8 tensor; a one-line error naming it."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path} is not a readable image ({error.strerror or error})") from None
    return decode_bytes(data, image_format, str(path))


def decode_files(paths: Sequence[Path], image_format: ImageFormat, what: str) -> Tensor:
    """``[len(paths), C, H, W]`` uint8: image files decoded on a thread per core."""
    return decode_all(paths, lambda path: decode_file(path, image_format), image_format, what)


__all__ = ["decode_all", "decode_bytes", "decode_file", "decode_files", "default_workers"]
