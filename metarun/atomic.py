"""Writes that either happen completely or not at all.

Every file a run depends on later (checkpoints, data caches, summaries) is written to a
temporary file in the same directory, flushed to disk and renamed over the target. A crash or
``kill -9`` at any moment leaves either the previous file or the new one, never half of either.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp's 0600 would hide shared caches
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    import torch  # here, so that tools that never save tensors (metarun-report) start fast

    _atomic(Path(path), lambda handle: torch.save(obj, handle))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    _atomic(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    _atomic(Path(path), lambda handle: handle.write(data))


def atomic_copy(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    with open(source, "rb") as src:
        _atomic(Path(target), lambda handle: shutil.copyfileobj(src, handle))
