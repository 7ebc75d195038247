"""The handwriting renderer: BPL's motor noise with Gaussian spreads, each one pinned."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from dataclasses import fields, replace

import numpy as np
import pytest

from metarun.data.handwriting import Handwriting, subdivide, trajectory_centre
from metarun.data.kanji import glyph_files, is_ideograph, render_all
from metarun.data.strokes import Hand, Stroke, disk, parse_path, render

SPREADS = [f.name for f in fields(Handwriting) if f.name.endswith(("_std", "_std_deg"))]
STILL = Handwriting(**{name: 0.0 for name in SPREADS})
# Two strokes, so that strokes can move relative to each other.
STROKES = [parse_path("M20,30 C40,40 60,40 90,30"), parse_path("M50,10 c0,30 5,60 -5,90")]


def drawings(style: Handwriting, count: int = 20, strokes: list[Stroke] = STROKES) -> np.ndarray:
    glyph = style.glyph(strokes)
    return render(glyph, Hand(0, "test"), count, style)


def traces(style: Handwriting, count: int) -> np.ndarray:
    glyph = Handwriting().glyph(STROKES)  # the same samples along the strokes for every style
    uniforms = Hand(0, "test").uniforms(count * style.randoms(glyph)).reshape(count, -1)
    return style.trace(glyph, uniforms)[0]


def test_the_defaults_are_the_fitted_spreads_and_none_is_zero() -> None:
    assert SPREADS == [
        "translation_std",
        "rotation_std_deg",
        "log_scale_std",
        "log_aspect_std",
        "shear_std",
        "stroke_offset_std",
        "stroke_rotation_std_deg",
        "stroke_log_scale_std",
        "point_std",
        "width_std",
    ]
    assert all(getattr(Handwriting(), name) > 0 for name in SPREADS)


def test_without_noise_every_drawing_is_the_glyph_at_the_drawers_size_and_place() -> None:
    still = drawings(STILL, count=3)
    assert np.array_equal(still[0], still[1]) and np.array_equal(still[0], still[2])
    curve, stroke_of = traces(STILL, 1)[0], Handwriting().glyph(STROKES).sample_stroke
    # The closed form: the curve's length-weighted centre and RMS radius are the style's.
    steps = np.linalg.norm(np.diff(curve, axis=0), axis=1) * (stroke_of[1:] == stroke_of[:-1])
    weight = np.concatenate([[0], steps]) + np.concatenate([steps, [0]])
    centre = (curve * weight[:, None]).sum(0) / weight.sum()
    radius = math.sqrt((((curve - centre) ** 2).sum(1) * weight).sum() / weight.sum())
    np.testing.assert_allclose(centre, STILL.centre, atol=0.3)
    assert radius == pytest.approx(STILL.size, rel=0.02)
    # The pen of diameter 6 (5.84 rounded), the tip the pen fit measured Omniglot's ink with:
    # a row through the vertical stroke is as wide as that tip.
    across = [dx for dy, dx in disk(6) if dy == 0]
    assert (still[0][75] == 0).sum() == len(across)


@pytest.mark.parametrize("name", SPREADS)
def test_every_spread_is_a_noise_that_its_zero_turns_off(name: str) -> None:
    alone = replace(STILL, **{name: getattr(Handwriting(), name)})
    drawn = drawings(alone)
    assert any(not np.array_equal(drawn[0], other) for other in drawn[1:]), name
    without = drawings(replace(Handwriting(), **{name: 0.0}))
    assert not np.array_equal(without, drawings(Handwriting())), name


def test_global_rotation_scale_and_translation_have_their_spreads() -> None:
    count, still = 400, traces(STILL, 1)[0]
    centred = still - still.mean(0)
    for name, value in (("rotation_std_deg", 8.5), ("log_scale_std", 0.131)):
        curves = traces(replace(STILL, **{name: value}), count)
        moved = curves - curves.mean(1, keepdims=True)
        # The similarity taking the still drawing onto each drawing (a closed form).
        dot = (centred * moved).sum((1, 2))
        cross = (centred[:, 0] * moved[..., 1] - centred[:, 1] * moved[..., 0]).sum(1)
        angle = np.degrees(np.arctan2(cross, dot))
        log_scale = np.log(np.linalg.norm(moved, axis=(1, 2)) / np.linalg.norm(centred))
        measured = {"rotation_std_deg": angle, "log_scale_std": log_scale}[name]
        assert measured.std() == pytest.approx(value, rel=0.12), name
        other = {"rotation_std_deg": log_scale, "log_scale_std": angle}[name]
        assert np.abs(other).max() < 1e-6, name  # nothing else moved
    shifts = traces(replace(STILL, translation_std=5.0), count).mean(1) - still.mean(0)
    assert shifts.std(0) == pytest.approx([5.0, 5.0], rel=0.12)


def test_subdividing_keeps_the_curve() -> None:
    (stroke,) = STROKES[:1]
    finer = subdivide(stroke, 3.0)
    assert len(finer) > len(stroke) and (len(finer) - 1) % 3 == 0
    np.testing.assert_allclose(finer[[0, -1]], stroke[[0, -1]])

    def bezier(controls: np.ndarray, t: np.ndarray) -> np.ndarray:
        weights = np.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], 1)
        return weights @ controls

    original = bezier(stroke, np.linspace(0, 1, 2001))
    for first in range(0, len(finer) - 1, 3):  # every piece lies on the original curve
        piece = bezier(finer[first : first + 4], np.linspace(0, 1, 7))
        gaps = np.linalg.norm(piece[:, None] - original[None], axis=2).min(1)
        assert gaps.max() < 0.05


def test_the_glyph_is_measured_along_its_length() -> None:
    line = Handwriting().glyph([parse_path("M10,50 L90,50")])
    centre, radius = trajectory_centre(line)
    np.testing.assert_allclose(centre, [50, 50], atol=1e-6)
    assert radius == pytest.approx(80 / math.sqrt(12), rel=1e-3)  # a uniform segment's RMS


RENDER_ONE_THREAD = """
import hashlib, sys
from metarun.data.handwriting import Handwriting
from metarun.data.kanji import glyph_files, is_ideograph, render_all
codes = [c for c in sorted(glyph_files()) if is_ideograph(c)][:24]
print(hashlib.sha256(render_all(codes, 0, 3, 28, Handwriting(), workers=2).tobytes()).hexdigest())
"""


def test_the_same_bytes_in_any_process_and_with_any_thread_count() -> None:
    codes = [c for c in sorted(glyph_files()) if is_ideograph(c)][:24]
    here = render_all(codes, 0, 3, 28, Handwriting(), workers=1)
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", RENDER_ONE_THREAD],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    assert done.stdout.strip() == hashlib.sha256(here.tobytes()).hexdigest()
    assert here.shape == (72, 28, 28) and (here < 128).mean() > 0.03  # strokes were drawn


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"point_std": -1.0}, "point_std: must be a number at least 0"),
        ({"size": 0.0}, "size: must be a positive number"),
        ({"width": 0.5}, "width: must be at least 1"),
        ({"knot_spacing": math.inf}, "knot_spacing: must be a positive length"),
        ({"centre": (1.0,)}, "centre: must be two numbers"),
    ],
)
def test_bad_values_name_their_field(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        Handwriting(**change)
