"""Helpers for the data-layer tests: small Omniglot-layout trees written into tmp dirs."""

from __future__ import annotations

import functools
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

# {folder: {alphabet: number of characters}}
Layout = dict[str, dict[str, int]]


def write_png(path: Path, seed: int, size: int = 8) -> None:
    """A small grayscale drawing: white background, a seeded scatter of black pixels."""
    rng = random.Random(seed)
    pixels = bytes(0 if rng.random() < 0.3 else 255 for _ in range(size * size))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("L", (size, size), pixels).save(path)


def write_omniglot_tree(root: Path, layout: Layout, drawings: int = 2, size: int = 8) -> Path:
    """``root/<folder>/<alphabet>/characterNN/<id>_<drawer>.png`` with distinct images."""
    seed = 0
    for folder, alphabets in layout.items():
        for alphabet, characters in alphabets.items():
            for c in range(1, characters + 1):
                for d in range(1, drawings + 1):
                    seed += 1
                    png = root / folder / alphabet / f"character{c:02d}" / f"{seed:04d}_{d:02d}.png"
                    write_png(png, seed, size)
    return root


def copy_sample_tree(source: Path, root: Path, layout: Layout, drawings: int = 3) -> Path:
    """A tiny copy of real sample images: the first characters and drawings of each alphabet."""
    for folder, alphabets in layout.items():
        for alphabet, characters in alphabets.items():
            chars = sorted(p for p in (source / folder / alphabet).iterdir() if p.is_dir())
            for char in chars[:characters]:
                target = root / folder / alphabet / char.name
                target.mkdir(parents=True)
                for png in sorted(char.glob("*.png"))[:drawings]:
                    shutil.copyfile(png, target / png.name)
    return root


@pytest.fixture(scope="session")
def omniglot_tree() -> Callable[..., Path]:
    """``omniglot_tree(root, layout, drawings=2, size=8)`` writes a synthetic tree."""
    return write_omniglot_tree


@pytest.fixture(scope="session")
def sample_copy(omniglot_sample_root: Path) -> Callable[..., Path]:
    """``sample_copy(root, layout, drawings=3)`` copies part of the real sample into ``root``."""
    return lambda root, layout, drawings=3: copy_sample_tree(
        omniglot_sample_root, root, layout, drawings
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server for ``tmp_path/served`` (torchvision's downloads need HTTP)."""
    directory = tmp_path / "served"
    directory.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=directory))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", directory
    httpd.shutdown()
    httpd.server_close()
