"""Fetching data set archives: mirrors tried in order, SHA-256 verified, extracted atomically.

Transfers go through torchvision's download utilities; verification and extraction are ours so
a corrupt or partial download is never mistaken for data: the archive is checked before it is
unpacked, and unpacking happens in a temporary folder renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.utils import download_url, extract_archive

from metarun.errors import DataError


@dataclass(frozen=True)
class Archive:
    """A downloadable archive that unpacks into one top-level folder named ``folder``."""

    filename: str
    urls: tuple[str, ...]
    sha256: str
    folder: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(archive: Archive, directory: Path) -> Path:
    """The verified archive file in ``directory``, downloading it if needed."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / archive.filename
    if target.is_file() and sha256_of(target) == archive.sha256:
        return target
    failures = []
    for url in archive.urls:
        target.unlink(missing_ok=True)
        try:
            download_url(url, str(directory), filename=archive.filename)
        except Exception as error:  # network errors come in many types; report and go on
            failures.append(f"{url}: {type(error).__name__}: {error}")
            continue
        digest = sha256_of(target)
        if digest == archive.sha256:
            return target
        failures.append(f"{url}: SHA-256 {digest[:16]}... does not match {archive.sha256[:16]}...")
    target.unlink(missing_ok=True)
    raise DataError(
        f"could not download {archive.filename} ({'; '.join(failures)}); download it by hand "
        f"from {archive.urls[0]} and unzip it into {directory}"
    )


def download_and_extract(archive: Archive, root: Path) -> Path:
    """``root/<archive.folder>``, downloaded, verified and unpacked if it was missing."""
    destination = root / archive.folder
    if destination.is_dir():
        return destination
    zip_path = fetch(archive, root)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{archive.folder}.") as scratch:
        try:
            extract_archive(str(zip_path), scratch)
        except Exception as error:
            raise DataError(f"{zip_path} could not be unpacked ({error}); delete it") from None
        unpacked = Path(scratch) / archive.folder
        if not unpacked.is_dir():
            zip_path.unlink(missing_ok=True)
            raise DataError(
                f"{zip_path} does not contain the folder {archive.folder}/ and was deleted; "
                f"download it by hand from {archive.urls[0]}"
            )
        unpacked.replace(destination)
    zip_path.unlink(missing_ok=True)
    return destination


__all__ = ["Archive", "download_and_extract", "fetch", "sha256_of"]
