"""Reading the numpy pickles few-shot data sets are shared as, with errors that name the file.

A pickle may call any importable function while it loads. The shared files (the miniImageNet
caches, the tieredImageNet PNG lists and label dicts) need only numpy's array reconstruction,
so the unpickler here resolves nothing else and refuses a file that asks for more. That is
safe-ish, not safe: numpy's reconstruction functions are trusted, and a hostile file can still
ask for a huge allocation. Only load files whose origin you know.

The classic failure is a Google Drive "can't scan this file for viruses" page saved under the
pickle's name; it is recognised and reported as HTML rather than as a cryptic unpickling error.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy

from metarun.errors import DataError

_NUMPY_2 = int(numpy.__version__.split(".")[0]) >= 2

# (module, name) pairs a numpy pickle refers to, written by numpy 1.x (numpy.core) or 2.x
# (numpy._core), under Python 2 or 3.
_NUMPY_GLOBALS = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
}
_TOP_LEVEL = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
}


def _allowed(module: str, name: str) -> bool:
    if (module, name) in _TOP_LEVEL:
        return True
    package, _, submodule = module.rpartition(".")
    return package in ("numpy.core", "numpy._core") and (submodule, name) in _NUMPY_GLOBALS


class _NumpyUnpickler(pickle.Unpickler):
    """Resolves numpy's array reconstruction and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if not _allowed(module, name):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not numpy data)")
        if module.startswith("numpy.core.") and _NUMPY_2:  # numpy 2 warns on the old path
            module = "numpy._core." + module.rsplit(".", 1)[1]
        return super().find_class(module, name)


def looks_like_html(head: bytes) -> bool:
    """Whether a file's first bytes are an HTML page (a download site's interstitial)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith((b"<!doctype html", b"<html", b"<head", b"<!--", b"<meta"))


def one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def load_numpy_pickle(path: Path) -> Any:
    """The object pickled in ``path``: numpy arrays, lists, dicts, strings and numbers.

    Python 2 pickles load too (decoded as ``latin1``, as numpy recommends for them). Keys a
    writer stored as ``bytes`` stay ``bytes``; ``str_keys`` turns them into ``str``.
    """
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path} is missing") from None
    except OSError as error:
        raise DataError(f"{path} cannot be opened ({one_line(error)})") from None
    with handle:
        if looks_like_html(handle.read(1024)):
            raise DataError(
                f"{path} is an HTML page (a download site's confirmation page saved under the "
                f"file's name), not a pickle; download the file itself again"
            )
        handle.seek(0)
        try:
            return _NumpyUnpickler(handle, encoding="latin1").load()
        except MemoryError:
            raise
        except Exception as error:  # truncated or foreign files fail in many ways
            raise DataError(
                f"{path} is not a readable numpy pickle ({one_line(error)}); it may be truncated "
                f"or damaged: download it again"
            ) from None


def str_keys(mapping: dict) -> dict:
    """A dict's ``bytes`` keys (from Python 2 pickles) as ``str``."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in mapping.items()}


def as_str(value: Any) -> str:
    """A label string that may be ``bytes`` (Python 2 pickles) as ``str``."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


__all__ = ["as_str", "load_numpy_pickle", "looks_like_html", "one_line", "str_keys"]
