"""A disk cache of decoded data sets, so images are decoded once per machine, not per run.

Entries are keyed by everything that determines their content (the files' names, sizes and
modification times, and the decoding parameters), so a changed file or a different image size
builds a new entry rather than reading a stale one. Entries are plain tensors and strings,
saved atomically and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metarun.atomic import atomic_torch_save

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$METARUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/metarun``, else ``~/.cache/metarun``."""
    if os.environ.get("METARUN_CACHE_DIR"):
        return Path(os.environ["METARUN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "metarun"


def files_fingerprint(root: Path, files: list[Path]) -> list[tuple[str, int, int]]:
    """Relative path, size and mtime of each file: cheap to compute, changes with content."""
    stats = []
    for path in files:
        st = path.stat()
        stats.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return stats


def cache_key(parts: Any) -> str:
    payload = json.dumps([CACHE_FORMAT, parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cached(
    name: str,
    key: str,
    build: Callable[[], dict[str, Any]],
    cache_dir: Path | None,
) -> dict[str, Any]:
    """The entry for ``key``: loaded if present and intact, else built and stored.

    A cache that cannot be written (read-only home, full disk) costs a warning and a rebuild
    next time, never the run.
    """
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = directory / f"{name}-{key[:20]}.pt"
    if path.is_file():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if entry.get("key") == key:
                return entry
            log.warning("cache entry %s belongs to other data; rebuilding it", path)
        except Exception as error:  # a truncated or foreign file: rebuild it
            log.warning("cache entry %s is unreadable (%s); rebuilding it", path, error)
    entry = dict(build())
    entry["key"] = key
    try:
        atomic_torch_save(entry, path)
    except OSError as error:
        log.warning("could not write cache %s (%s); decoding again next run", path, error)
    return entry
