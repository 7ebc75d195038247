"""dataset=kanji: the shipped radical split, deterministic rendering, the cache, errors, runs."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import fields
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import TINY_ALGORITHM, TINY_SETTINGS, metarun, one_line_error
from PIL import Image

from metarun.data import kanji as kanji_module
from metarun.data.episodes import EpisodeSpec
from metarun.data.handwriting import Handwriting
from metarun.data.images import ImageFormat
from metarun.data.kanji import (
    Kanji,
    glyph_files,
    is_ideograph,
    read_strokes,
    render_all,
    render_characters,
    split_listing,
    stroke_count,
)
from metarun.data.strokes import Distortion, Glyph, Hand, render
from metarun.errors import ConfigError, DataError

CLASSIC_SHA256 = "f0bff4d66a8e464e7c26702adfc224bd4463aa553ab4b9004874ee89d4cfdcad"
SMALL = {"characters_per_split": 4, "drawings": 4, "workers": 1}


def small(cache: Path, **overrides: object) -> Kanji:
    return Kanji(**{**SMALL, "cache_dir": str(cache), **overrides})


# --------------------------------------------------------------------------- the shipped split


def test_the_split_holds_whole_radicals_of_installed_kanji() -> None:
    listing = split_listing()
    assert listing["grouped_by"] == "radical"
    available = glyph_files()
    seen: dict[str, str] = {}
    radicals: dict[str, set[str]] = {}
    for split, groups in listing["splits"].items():
        codes = [code for codes in groups.values() for code in codes]
        assert len(codes) == listing["characters"][split]
        for code in codes:
            assert code not in seen, f"{code} is in {seen[code]} and {split}"
            seen[code] = split
            assert is_ideograph(code) and code in available
        radicals[split] = set(groups)
    assert not (radicals["train"] & radicals["val"] or radicals["train"] & radicals["test"])
    assert not radicals["val"] & radicals["test"]
    total = len(seen)
    assert total == sum(1 for code in available if is_ideograph(code))  # every kanji, once
    shares = {split: listing["characters"][split] / total for split in ("train", "val", "test")}
    assert shares["train"] > 0.6 and 0.15 < shares["val"] < 0.2 and 0.19 < shares["test"] < 0.24


def test_classes_are_radical_slash_code_and_limited_evenly(tmp_path: Path) -> None:
    data = small(tmp_path)
    names = data.split_names()
    assert [len(names[s]) for s in ("train", "val", "test")] == [4, 4, 4]
    listing = split_listing()["splits"]["train"]
    every = [f"{r}/{c}" for r, codes in sorted(listing.items()) for c in codes]
    assert names["train"][0] == every[0] and names["train"][-1] == every[-1]
    radical, code = names["train"][1].split("/")
    assert code in listing[radical]


def test_max_strokes_keeps_the_simpler_characters(tmp_path: Path) -> None:
    every = small(tmp_path, characters_per_split=None).split_names()["train"]
    simple = small(tmp_path, characters_per_split=None, max_strokes=4).split_names()["train"]
    counts = {name: stroke_count(name.split("/")[1]) for name in every}
    assert simple == [name for name in every if counts[name] <= 4]  # in the same order
    assert 50 < len(simple) < 200 and max(counts.values()) > 20
    assert stroke_count("04e00") == 1 and stroke_count("05b57") == 6  # 一, 字


# --------------------------------------------------------------------------- rendering


def test_same_seed_same_bytes_other_seed_other_drawings(tmp_path: Path) -> None:
    first = small(tmp_path / "a").classes("val")
    again = small(tmp_path / "b").classes("val")  # rendered afresh, not read from a cache
    assert first.images.dtype == torch.uint8 and first.images.shape == (16, 1, 28, 28)
    assert torch.equal(first.images, again.images) and first.names == again.names
    reseeded = small(tmp_path / "c", seed=1).classes("val")
    assert reseeded.names == first.names
    for row in range(len(first.images)):  # every drawing of every class differs
        assert not torch.equal(first.images[row], reseeded.images[row])
    drawings = first.images[:4]  # one class's drawings differ from each other
    assert all(not torch.equal(drawings[i], drawings[j]) for i in range(4) for j in range(i))


def test_processes_render_the_same_bytes_as_one() -> None:
    codes = [c for c in sorted(glyph_files()) if is_ideograph(c)][:40]  # two chunks of work
    one = render_all(codes, 0, 2, 28, Distortion(), workers=1)
    two = render_all(codes, 0, 2, 28, Distortion(), workers=2)
    assert one.shape == (len(codes) * 2, 28, 28)
    assert np.array_equal(one, two)


def test_drawings_are_resized_exactly_as_omniglot_images_are() -> None:
    svg = glyph_files()["05b57"]
    (small_drawing,) = render_characters([svg], ["05b57"], 0, 1, 28, Distortion())
    (full,) = render(Glyph(read_strokes(svg)), Hand(0, "05b57"), 1, Distortion())
    encoded = ImageFormat(size=28, channels=1, invert=True).encode(Image.fromarray(full))
    assert torch.equal(torch.from_numpy(small_drawing)[None], encoded)
    assert (full == 0).mean() > 0.03  # strokes were drawn


# --------------------------------------------------------------------------- the cache


def test_cache_is_reused_and_never_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = small(tmp_path).classes("train").images
    calls = []
    original = kanji_module.render_all

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(kanji_module, "render_all", counting)
    assert torch.equal(small(tmp_path).classes("train").images, built)
    assert calls == []  # read from the cache
    for change in (
        {"drawings": 5},
        {"seed": 3},
        {"distortion": {"offset": 9.0}},
        {"image_size": 32},
        {"renderer": "handwriting"},
        {"renderer": "handwriting", "distortion": {"translation_std": 9.0}},
    ):
        small(tmp_path, **change).classes("train")
    assert len(calls) == 6  # every other parameter renders anew
    monkeypatch.setattr(kanji_module, "kanjivg_version", lambda: "20990101")
    small(tmp_path).classes("train")
    assert len(calls) == 7  # another KanjiVG release is another data set


def test_every_rendering_parameter_keys_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    styles = []

    def blank(codes, seed, drawings, size, style, workers):  # no drawing: only the key matters
        styles.append(style)
        return np.zeros((len(codes) * drawings, size, size), dtype=np.uint8)

    monkeypatch.setattr(kanji_module, "render_all", blank)
    defaults = Handwriting()
    changes = [
        {f.name: tuple(v + 1 for v in value) if isinstance(value, tuple) else value + 0.5}
        for f in fields(Handwriting)
        for value in [getattr(defaults, f.name)]
    ]
    for change in [{}, *changes, {}]:
        small(tmp_path, renderer="handwriting", distortion=change).classes("train")
    assert len(styles) == 1 + len(fields(Handwriting))  # each change renders; defaults once
    assert styles[0] == defaults and all(s != defaults for s in styles[1:])


def test_the_classic_renderer_draws_the_bytes_it_always_drew() -> None:
    """``dataset.renderer=classic`` reproduces old results: these hashes were taken before the
    handwriting renderer existed."""
    codes = [c for c in sorted(glyph_files()) if is_ideograph(c)][:6]
    drawn = render_all(codes, 0, 2, 28, Distortion(), workers=1)
    assert hashlib.sha256(drawn.tobytes()).hexdigest() == CLASSIC_SHA256


# --------------------------------------------------------------------------- episodes


def test_within_radical_episodes(tmp_path: Path) -> None:
    data = small(tmp_path, characters_per_split=None, drawings=2, within_group=True)
    everything = data.split_names()

    def few_radicals(names: list[str]) -> list[str]:  # so that rendering stays quick
        largest = [r for r, _ in Counter(n.split("/")[0] for n in names).most_common(3)]
        return [n for r in largest for n in [m for m in names if m.startswith(f"{r}/")][:8]]

    data.split_names = lambda: {split: few_radicals(names) for split, names in everything.items()}
    sampler = data.sampler("train", EpisodeSpec(5, 1, 1))
    plan = sampler.draw(50, torch.Generator().manual_seed(0))
    groups = np.array(sampler.classes.groups)
    for episode in plan:
        chosen = episode[:, 0] // 2  # two drawings per class
        assert len(set(groups[chosen.numpy()])) == 1


# --------------------------------------------------------------------------- errors


def test_bad_settings_name_their_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^dataset\.drawings"):
        small(tmp_path, drawings=0)
    with pytest.raises(ConfigError, match=r"^dataset\.distortion\.wobble.*valid: anchor_jit"):
        small(tmp_path, distortion={"wobble": 1})
    with pytest.raises(ConfigError, match=r"^dataset\.distortion\.wobble.*valid: centre, kn"):
        small(tmp_path, renderer="handwriting", distortion={"wobble": 1})
    with pytest.raises(ConfigError, match=r"^dataset\.renderer: must be one of handwriting, cl"):
        small(tmp_path, renderer="bpl")
    with pytest.raises(ConfigError, match=r"^dataset\.distortion\.point_std: must be a number at"):
        small(tmp_path, renderer="handwriting", distortion={"point_std": -1})
    with pytest.raises(ConfigError, match=r"^dataset\.distortion\.size: must be a number, got 'x"):
        small(tmp_path, renderer="handwriting", distortion={"size": "x"})
    with pytest.raises(ConfigError, match=r"^dataset\.distortion\.width: must be at least 1"):
        small(tmp_path, renderer="handwriting", distortion={"width": 0})
    with pytest.raises(ConfigError, match=r"^dataset\.characters_per_split"):
        small(tmp_path, characters_per_split=0)
    with pytest.raises(ConfigError, match=r"^dataset\.max_strokes: must be null .* got 0"):
        small(tmp_path, max_strokes=0)
    with pytest.raises(ConfigError, match=r"^dataset\.shots \+ dataset\.queries"):
        small(tmp_path).sampler("train", EpisodeSpec(3, 2, 3))  # 5 > 4 drawings


def test_a_broken_svg_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "05b57.svg"
    broken.write_text('<svg xmlns="http://www.w3.org/2000/svg"><path d="M1,2 c1,2"/></svg>')
    with pytest.raises(DataError, match="05b57.svg is not a readable KanjiVG file"):
        read_strokes(broken)
    broken.write_text("<svg")
    with pytest.raises(DataError, match="05b57.svg is not a readable KanjiVG file"):
        read_strokes(broken)


def test_without_the_kanjivg_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def missing(name: str):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(kanji_module, "distribution", missing)
    glyph_files.cache_clear()
    try:
        with pytest.raises(DataError, match="pip install kanjivg"):
            small(tmp_path).classes("train")
    finally:
        glyph_files.cache_clear()


# --------------------------------------------------------------------------- whole runs

TINY = (
    "dataset=kanji",
    "dataset.characters_per_split=12",
    "dataset.drawings=4",
    "dataset.workers=1",
    *TINY_SETTINGS,
)
ALGORITHM = TINY_ALGORITHM


@pytest.mark.parametrize("algorithm", ["protonet", "maml"])
def test_end_to_end_on_kanji(algorithm: str, data_cache_dir: Path, tmp_path: Path) -> None:
    done = metarun(*TINY, *ALGORITHM[algorithm], cwd=tmp_path, cache=data_cache_dir)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("test acc ") and last.endswith("(95% CI, 6 episodes)"), last
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert run_dir.name.endswith(f"_{algorithm}-kanji")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["test"]["episodes"] == 6


def test_a_bad_kanji_setting_is_a_one_line_error(tmp_path: Path, data_cache_dir: Path) -> None:
    done = metarun(*TINY, "dataset.drawings=0", cwd=tmp_path, cache=data_cache_dir)
    assert one_line_error(done).startswith("metarun: error: dataset.drawings: must be at least 1")
