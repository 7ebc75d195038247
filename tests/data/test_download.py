"""Downloading archives: mirrors, SHA-256 verification, atomic extraction, and Omniglot's use.

Files are served over HTTP by a server on a local thread (torchvision's ``download_url`` does not
take ``file://`` URLs); nothing leaves the machine.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from metarun.data import omniglot as omniglot_module
from metarun.data.download import Archive, download_and_extract, fetch, sha256_of
from metarun.data.omniglot import ARCHIVES, Omniglot
from metarun.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_data_cache")

OFFICIAL_FOLDERS = {
    "images_background",
    "images_evaluation",
    "images_background_small1",
    "images_background_small2",
}


class Server:
    """A local HTTP server for one directory that records every request path."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.requests: list[str] = []
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def send_head(self):  # every GET and HEAD passes through here
                requests.append(self.path)
                return super().send_head()

            def log_message(self, format, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    served = tmp_path / "www"
    served.mkdir()
    running = Server(served)
    yield running
    running.close()


def make_zip(target: Path, source_root: Path, folder: str) -> str:
    """Zip ``source_root/folder`` as ``folder/...`` into ``target``; its SHA-256."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted((source_root / folder).rglob("*")):
            archive.write(path, path.relative_to(source_root).as_posix())
    return hashlib.sha256(target.read_bytes()).hexdigest()


@pytest.fixture
def fake_archive(tmp_path: Path, server: Server, omniglot_tree) -> Archive:
    """``fake.zip`` on the server, unpacking into ``images_fake/<alphabet>/<character>/``."""
    source = omniglot_tree(tmp_path / "src", {"images_fake": {"Greek": 2, "Tagalog": 1}})
    digest = make_zip(server.directory / "fake.zip", source, "images_fake")
    return Archive("fake.zip", (f"{server.url}/fake.zip",), digest, "images_fake")


def test_download_verifies_and_extracts(
    tmp_path: Path, server: Server, fake_archive: Archive
) -> None:
    root = tmp_path / "data"
    folder = download_and_extract(fake_archive, root)
    assert folder == root / "images_fake"
    pngs = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert len(pngs) == 3 * 2
    assert pngs[0].startswith("Greek/character01/")
    assert sorted(p.name for p in root.iterdir()) == ["images_fake"], "zip or scratch left over"
    assert server.requests and all(r == "/fake.zip" for r in server.requests)

    served = len(server.requests)
    assert download_and_extract(fake_archive, root) == folder
    assert len(server.requests) == served, "an existing folder must not be downloaded again"


def test_wrong_checksum_leaves_nothing_behind(
    tmp_path: Path, server: Server, fake_archive: Archive
) -> None:
    wrong = Archive(fake_archive.filename, fake_archive.urls, "0" * 64, fake_archive.folder)
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        download_and_extract(wrong, root)
    message = str(info.value)
    assert "\n" not in message
    assert "fake.zip" in message and "does not match" in message
    assert server.requests, "it should have tried the mirror"
    assert not (root / "fake.zip").exists() and not (root / "images_fake").exists()
    assert list(root.iterdir()) == []


def test_falls_back_to_the_next_mirror(
    tmp_path: Path, server: Server, fake_archive: Archive
) -> None:
    mirrors = (f"{server.url}/gone/fake.zip", f"{server.url}/fake.zip")
    archive = Archive(fake_archive.filename, mirrors, fake_archive.sha256, fake_archive.folder)
    folder = download_and_extract(archive, tmp_path / "data")
    assert sorted(p.name for p in folder.iterdir()) == ["Greek", "Tagalog"]
    assert "/gone/fake.zip" in server.requests and "/fake.zip" in server.requests
    assert server.requests.index("/gone/fake.zip") < server.requests.index("/fake.zip")


def test_a_bad_mirror_then_a_good_one(tmp_path: Path, server: Server, fake_archive: Archive):
    (server.directory / "other.zip").write_bytes(b"PK not the archive")
    mirrors = (f"{server.url}/other.zip", f"{server.url}/fake.zip")
    archive = Archive("fake.zip", mirrors, fake_archive.sha256, "images_fake")
    zip_path = fetch(archive, tmp_path / "data")
    assert sha256_of(zip_path) == fake_archive.sha256


def test_unreachable_url_suggests_a_manual_download(tmp_path: Path) -> None:
    archive = Archive("x.zip", ("http://127.0.0.1:1/x.zip",), "0" * 64, "images_x")
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        download_and_extract(archive, root)
    message = str(info.value)
    assert "\n" not in message
    assert "x.zip" in message
    assert "by hand" in message and "http://127.0.0.1:1/x.zip" in message
    assert str(root) in message
    assert not (root / "x.zip").exists() and not (root / "images_x").exists()


def test_a_verified_zip_on_disk_is_not_downloaded_again(
    tmp_path: Path, server: Server, fake_archive: Archive
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "fake.zip").write_bytes((server.directory / "fake.zip").read_bytes())
    download_and_extract(fake_archive, root)
    assert server.requests == []
    assert (root / "images_fake" / "Greek").is_dir() and not (root / "fake.zip").exists()


def test_a_stale_zip_on_disk_is_replaced(
    tmp_path: Path, server: Server, fake_archive: Archive
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "fake.zip").write_bytes(b"half a download")
    download_and_extract(fake_archive, root)
    assert server.requests
    assert (root / "images_fake" / "Tagalog" / "character01").is_dir()


def test_an_archive_without_its_folder_is_a_data_error(
    tmp_path: Path, server: Server, omniglot_tree
) -> None:
    source = omniglot_tree(tmp_path / "src", {"images_other": {"Greek": 1}})
    digest = make_zip(server.directory / "odd.zip", source, "images_other")
    archive = Archive("odd.zip", (f"{server.url}/odd.zip",), digest, "images_fake")
    root = tmp_path / "data"
    with pytest.raises(DataError, match="images_fake") as info:
        download_and_extract(archive, root)
    assert "\n" not in str(info.value)
    assert not (root / "images_fake").exists()
    assert not [p for p in root.iterdir() if p.is_dir()], "scratch folder left behind"


def test_omniglot_downloads_missing_folders(
    tmp_path: Path,
    server: Server,
    omniglot_tree,
    monkeypatch: pytest.MonkeyPatch,
    data_cache_dir: Path,
) -> None:
    layout = {
        "images_background_small1": {"Greek": 2, "Korean": 3, "Latin": 2},
        "images_background_small2": {"Greek": 2, "Sanskrit": 2},
    }
    source = omniglot_tree(tmp_path / "src", layout, drawings=3)
    archives = {}
    for folder in layout:
        digest = make_zip(server.directory / f"{folder}.zip", source, folder)
        archives[folder] = Archive(f"{folder}.zip", (f"{server.url}/{folder}.zip",), digest, folder)
    monkeypatch.setattr(omniglot_module, "ARCHIVES", archives)

    root = tmp_path / "omniglot"
    omniglot = Omniglot(
        str(root),
        download=True,
        background="images_background_small1",
        evaluation="images_background_small2",
        val_alphabets=1,
        rotate=False,
        cache_dir=str(data_cache_dir),
    )
    assert not root.exists(), "construction must not download"
    train = omniglot.classes("train")
    assert sorted(p.name for p in root.iterdir()) == sorted(layout)
    assert train.images.shape[1:] == (1, 28, 28)
    assert set(train.counts.tolist()) == {3}
    assert train.num_classes + omniglot.classes("val").num_classes == 7
    assert {n.split("/")[0] for n in omniglot.classes("test").names} == {"Sanskrit"}
    assert {"/images_background_small1.zip", "/images_background_small2.zip"} <= set(
        server.requests
    )


def test_official_archive_table() -> None:
    assert set(ARCHIVES) == OFFICIAL_FOLDERS
    for folder, archive in ARCHIVES.items():
        assert archive.folder == folder
        assert archive.filename == f"{folder}.zip"
        assert re.fullmatch(r"[0-9a-f]{64}", archive.sha256)
        assert len(archive.urls) >= 1
        for url in archive.urls:
            assert url.startswith("https://") and url.endswith(f"/{folder}.zip")
    assert len({a.sha256 for a in ARCHIVES.values()}) == 4
