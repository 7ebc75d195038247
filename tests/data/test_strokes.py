"""The handwriting renderer: SVG path parsing, the geometry of a drawing, and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from metarun.data.strokes import CANVAS, Distortion, Glyph, Hand, parse_path, render

STILL = Distortion(
    rotation_deg=0.0,
    scale=(1.0, 1.0),
    aspect=0.0,
    shear=0.0,
    offset=0.0,
    stroke_rotation_deg=0.0,
    stroke_scale=0.0,
    stroke_offset=0.0,
    anchor_jitter=0.0,
    handle_jitter=0.0,
    width=(3.0, 3.0),
    width_variation=0.0,
)


def test_relative_cubics_become_absolute_control_points() -> None:
    # The first stroke of 字 (U+5B57) as KanjiVG writes it.
    points = parse_path("M52.73,9.5c1.01,1.01,1.75,2.25,1.75,3.76c0,3.53-0.09,5.73-0.1,8.95")
    expected = [
        (52.73, 9.5),
        (53.74, 10.51),
        (54.48, 11.75),
        (54.48, 13.26),
        (54.48, 16.79),
        (54.39, 18.99),
        (54.38, 22.21),
    ]
    np.testing.assert_allclose(points, expected, atol=1e-9)


def test_smooth_cubics_reflect_the_previous_handle_and_lines_are_straight() -> None:
    points = parse_path("M0,0 C1,0 2,1 3,1 S5,2 6,2 s1,0 1,1 L9,1")
    np.testing.assert_allclose(points[4], (4.0, 1.0))  # (2,1) reflected through (3,1)
    np.testing.assert_allclose(points[7], (7.0, 2.0))  # (5,2) reflected through (6,2)
    np.testing.assert_allclose(points[9], (7.0, 3.0))  # relative to (6,2)
    np.testing.assert_allclose(
        points[-3:], [(7 + 2 / 3, 3 - 2 / 3), (8 + 1 / 3, 3 - 4 / 3), (9, 1)]
    )


@pytest.mark.parametrize("d", ["M1,2", "M1,2c1,2,3", "", "M1,2 c1,2,3,4,5,6,7"])
def test_malformed_paths_are_refused(d: str) -> None:
    with pytest.raises(ValueError):
        parse_path(d)


def test_an_undistorted_line_is_a_band_of_the_pen_width() -> None:
    # A horizontal stroke across the 109-unit box at y = 54, i.e. row 52.02 at 105x105.
    glyph = Glyph([parse_path("M10,54 C40,54 70,54 99,54")])
    (drawing,) = render(glyph, Hand(0, "line"), 1, STILL)
    assert drawing.shape == (CANVAS, CANVAS) and set(np.unique(drawing)) == {0, 255}
    rows = np.flatnonzero((drawing == 0).any(axis=1))
    columns = np.flatnonzero((drawing == 0).any(axis=0))
    assert rows.tolist() == [51, 52, 53]  # a 3-pixel pen centred on the line
    scale = CANVAS / 109
    assert columns[0] == round(10 * scale) - 1 and columns[-1] == round(99 * scale) + 1
    assert (drawing[52, columns[0] : columns[-1] + 1] == 0).all()  # unbroken


def test_drawings_are_deterministic_per_hand_and_differ_between_hands() -> None:
    glyph = Glyph([parse_path("M20,20 C40,30 60,30 90,20"), parse_path("M50,10 c0,30 5,60 -5,90")])
    first = render(glyph, Hand(0, "04e00"), 4, Distortion())
    assert np.array_equal(first, render(glyph, Hand(0, "04e00"), 4, Distortion()))
    # Drawing k is the same whether 2 or 4 drawings are made.
    assert np.array_equal(first[:2], render(glyph, Hand(0, "04e00"), 2, Distortion()))
    other_seed = render(glyph, Hand(1, "04e00"), 4, Distortion())
    for k in range(4):
        assert not np.array_equal(first[k], other_seed[k])
        for j in range(k):
            assert not np.array_equal(first[k], first[j])
    # Distorted, but still the same glyph: the ink overlaps the undistorted drawing's.
    (still,) = render(glyph, Hand(0, "04e00"), 1, STILL)
    near = np.zeros_like(still, dtype=bool)
    ink = still == 0
    for dy in range(-12, 13, 3):
        for dx in range(-12, 13, 3):
            near |= np.roll(ink, (dy, dx), axis=(0, 1))
    for drawing in first:
        assert ((drawing == 0) & near).sum() > 0.9 * (drawing == 0).sum()


def test_hands_are_portable_streams() -> None:
    """The uniforms of a hand are fixed numbers: the data set is the same on every machine."""
    uniforms = Hand(0, "05b57").uniforms(3)
    assert uniforms.dtype == np.float64 and ((0 <= uniforms) & (uniforms < 1)).all()
    np.testing.assert_array_equal(uniforms, Hand(0, "05b57").uniforms(3))
    assert not np.array_equal(uniforms, Hand(1, "05b57").uniforms(3))
