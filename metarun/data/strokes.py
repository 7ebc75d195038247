"""Handwriting-like drawings of vector glyphs: SVG stroke paths in, binary 105x105 bitmaps out.

Each drawing distorts the glyph the way a different hand would: a global affine (rotation,
scale, aspect, shear, offset), a small affine per stroke about its own centre, jitter of every
Bézier control point (anchors and handles move together, so strokes stay smooth), a pen width
per drawing and a width variation per stroke. Strokes are drawn black on white with round ends
and no anti-aliasing, as Omniglot's drawings are, and resized like Omniglot afterwards.

Randomness is a separate stream per (seed, glyph) (``Hand``): a drawing does not depend on
which other glyphs are rendered, in which order, or in how many processes.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

CANVAS = 105  # Omniglot's drawing size
_NUMBER = re.compile(r"[-+]?(?:\d*\.\d+|\d+\.?)(?:[eE][-+]?\d+)?")
_COMMAND = re.compile(r"[MmCcSsLlZz]")

# A stroke: the control points of consecutive cubic Béziers, [3 * segments + 1, 2].
Stroke = np.ndarray


@dataclass(frozen=True)
class Distortion:
    """How much one drawing may differ from the glyph; lengths in the glyph's 109-unit box.

    The defaults give drawings about as varied as Omniglot's 20 drawers: recognisably the same
    character, never the same bitmap.
    """

    rotation_deg: float = 8.0  # global rotation, uniform in ±
    scale: tuple[float, float] = (0.8, 1.0)  # global scale range
    aspect: float = 0.08  # x/y stretch, uniform in ±
    shear: float = 0.12  # uniform in ±
    offset: float = 6.0  # global translation, uniform in ± per axis
    stroke_rotation_deg: float = 5.0  # per stroke, about its centre
    stroke_scale: float = 0.08  # per stroke, uniform in ±
    stroke_offset: float = 2.0  # per stroke, Gaussian std per axis
    anchor_jitter: float = 1.5  # Gaussian std of each segment end point
    handle_jitter: float = 1.0  # extra Gaussian std of each inner control point
    width: tuple[float, float] = (3.0, 5.0)  # pen width in pixels at 105x105
    width_variation: float = 0.15  # per stroke, uniform in ±

    def fingerprint(self) -> dict:
        return asdict(self)

    def glyph(self, strokes: list[Stroke]) -> Glyph:
        return Glyph(strokes)

    def randoms(self, glyph: Glyph) -> int:
        return glyph.randoms_per_drawing

    def trace(self, glyph: Glyph, uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points, widths = distort(glyph, uniforms, self)
        curve = np.einsum("tk,dtkc->dtc", glyph.sample_weights, points[:, glyph.sample_controls])
        return curve * (CANVAS / glyph.box), widths[:, glyph.sample_stroke]


def parse_path(d: str) -> Stroke:
    """An SVG path of moveto, cubic (C/S) and line commands as cubic control points.

    KanjiVG uses M, C, c, S and s; L and l are accepted as straight cubics; each path is one
    stroke, so a second moveto continues the same polyline of segments.
    """
    tokens = [(m.start(), m.group()) for m in _COMMAND.finditer(d)]
    points: list[tuple[float, float]] = []
    current = (0.0, 0.0)
    last_handle: tuple[float, float] | None = None
    for i, (position, command) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(d)
        values = [float(v) for v in _NUMBER.findall(d[position + 1 : end])]
        relative = command.islower()
        kind = command.upper()
        arity = {"M": 2, "C": 6, "S": 4, "L": 2, "Z": 0}[kind]
        if arity and (not values or len(values) % arity):
            raise ValueError(f"malformed SVG path command {command!r} in {d[:60]!r}")
        groups = [values[j : j + arity] for j in range(0, len(values), arity)] if arity else []
        for n, group in enumerate(groups):
            ox, oy = current if relative else (0.0, 0.0)
            xy = [(ox + group[j], oy + group[j + 1]) for j in range(0, len(group), 2)]
            if kind == "M" and n == 0:
                if not points:
                    points.append(xy[0])
                current, last_handle = xy[0], None
                continue
            if kind in ("M", "L"):  # a straight segment as a cubic
                (x0, y0), (x1, y1) = current, xy[0]
                h1 = (x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3)
                h2 = (x0 + 2 * (x1 - x0) / 3, y0 + 2 * (y1 - y0) / 3)
                xy = [h1, h2, xy[0]]
            elif kind == "S":  # first handle: the previous one reflected through the anchor
                if last_handle is None:
                    first = current
                else:
                    first = (2 * current[0] - last_handle[0], 2 * current[1] - last_handle[1])
                xy = [first, *xy]
            if not points:
                points.append(current)
            points.extend(xy)
            current, last_handle = xy[2], xy[1]
    if len(points) < 4:
        raise ValueError(f"SVG path {d[:60]!r} has no curve segment")
    return np.asarray(points, dtype=np.float64)


class Hand:
    """The random choices of a glyph's drawings: a PCG64 stream keyed by (seed, glyph).

    Uniforms are built from the bit generator's raw 64-bit output, which NumPy keeps identical
    across versions (its ``Generator`` methods carry no such promise).
    """

    def __init__(self, *key: object) -> None:
        digest = hashlib.sha256(repr(key).encode("utf-8")).digest()
        self._bits = np.random.PCG64(int.from_bytes(digest[:16], "big"))

    def uniforms(self, count: int) -> np.ndarray:
        """``count`` floats in [0, 1) with 53 random bits each."""
        return (self._bits.random_raw(count) >> np.uint64(11)) * (1.0 / 2**53)


class Glyph:
    """A glyph's strokes flattened into one array, with the bookkeeping to distort and sample
    all of its drawings at once."""

    def __init__(self, strokes: list[Stroke], box: float = 109.0, spacing: float = 0.5) -> None:
        self.box = box
        self.points = np.concatenate(strokes)  # [P, 2]
        sizes = [len(stroke) for stroke in strokes]
        starts = np.cumsum([0, *sizes[:-1]])
        self.stroke_of = np.repeat(np.arange(len(strokes)), sizes)  # [P]
        self.num_strokes = len(strokes)
        local = np.concatenate([np.arange(n) for n in sizes])
        # Anchors (every third point of a stroke) jitter, and their handles follow them.
        self.anchor_of = starts[self.stroke_of] + np.minimum(
            np.round(local / 3).astype(int) * 3, np.array(sizes)[self.stroke_of] - 1
        )
        self.is_handle = (local % 3) != 0
        self.centres = np.stack([stroke.mean(axis=0) for stroke in strokes])  # [S, 2]
        # Every cubic segment, sampled densely enough (for distortions up to ~1.5x longer) that
        # consecutive samples are at most ``spacing`` pixels apart at 105x105.
        first = np.concatenate(
            [s0 + 3 * np.arange((n - 1) // 3) for s0, n in zip(starts, sizes, strict=True)]
        )
        controls = self.points[first[:, None] + np.arange(4)]  # [G, 4, 2]
        polygon = np.linalg.norm(np.diff(controls, axis=1), axis=2).sum(axis=1)
        samples = np.ceil(1.5 * polygon * (CANVAS / box) / spacing).astype(int) + 2
        segment = np.repeat(np.arange(len(first)), samples)
        position = np.arange(len(segment)) - np.repeat(np.cumsum(samples) - samples, samples)
        t = position / (samples[segment] - 1)  # 0 ... 1 within each segment
        self.sample_controls = first[segment][:, None] + np.arange(4)  # [T, 4] point indices
        self.sample_weights = np.stack(
            [(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], axis=1
        )  # [T, 4] Bernstein weights
        self.sample_stroke = self.stroke_of[first[segment]]  # [T]

    @property
    def randoms_per_drawing(self) -> int:
        return 7 + 7 * self.num_strokes + 8 * len(self.points)


def normals(uniforms: np.ndarray) -> np.ndarray:
    """Standard normals from pairs of uniforms (Box-Muller): half as many as given."""
    u1, u2 = 1.0 - uniforms[..., 0::2], uniforms[..., 1::2]
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def affines(rotation_deg: np.ndarray, sx: np.ndarray, sy: np.ndarray, shear: np.ndarray):
    """``[..., 2, 2]`` matrices: rotation @ shear @ scale."""
    a = np.radians(rotation_deg)
    cos, sin = np.cos(a), np.sin(a)
    # [[c, -s], [s, c]] @ [[1, h], [0, 1]] @ [[sx, 0], [0, sy]]
    return np.stack(
        [
            np.stack([cos * sx, (cos * shear - sin) * sy], axis=-1),
            np.stack([sin * sx, (sin * shear + cos) * sy], axis=-1),
        ],
        axis=-2,
    )


def distort(glyph: Glyph, uniforms: np.ndarray, d: Distortion) -> tuple[np.ndarray, np.ndarray]:
    """Control points ``[D, P, 2]`` as D hands draw them, and each stroke's pen width
    ``[D, S]`` in pixels, from ``[D, glyph.randoms_per_drawing]`` uniforms."""
    count, s, p = len(uniforms), glyph.num_strokes, len(glyph.points)
    # 7 per drawing, 3 + 4 per stroke, 8 per control point, in this order.
    take = iter(np.split(uniforms, np.cumsum([7, 3 * s, 4 * s]), axis=1))
    g, per_stroke, stroke_normals, point_normals = (next(take) for _ in range(4))

    def symmetric(u: np.ndarray, half: float) -> np.ndarray:
        return (2.0 * u - 1.0) * half

    scale = d.scale[0] + (d.scale[1] - d.scale[0]) * g[:, 0]
    stretch = 1.0 + symmetric(g[:, 1], d.aspect)
    whole = affines(
        symmetric(g[:, 2], d.rotation_deg),
        scale * stretch,
        scale / stretch,
        symmetric(g[:, 3], d.shear),
    )  # [D, 2, 2]
    shift = symmetric(g[:, 4:6], d.offset)  # [D, 2]
    width = d.width[0] + (d.width[1] - d.width[0]) * g[:, 6]

    rot, grow, thick = per_stroke[:, :s], per_stroke[:, s : 2 * s], per_stroke[:, 2 * s :]
    own = affines(
        symmetric(rot, d.stroke_rotation_deg),
        1.0 + symmetric(grow, d.stroke_scale),
        1.0 + symmetric(grow, d.stroke_scale),
        np.zeros_like(rot),
    )  # [D, S, 2, 2]
    own_shift = d.stroke_offset * normals(stroke_normals).reshape(count, s, 2)
    jitter = normals(point_normals).reshape(count, p, 2, 2)
    centre = glyph.centres[glyph.stroke_of]  # [P, 2]
    moved = np.einsum("dpij,pj->dpi", own[:, glyph.stroke_of], glyph.points - centre)
    moved += centre + own_shift[:, glyph.stroke_of]
    moved += d.anchor_jitter * jitter[:, glyph.anchor_of, 0]
    moved += d.handle_jitter * jitter[:, :, 1] * glyph.is_handle[:, None]
    middle = glyph.box / 2
    drawn = np.einsum("dij,dpj->dpi", whole, moved - middle) + middle + shift[:, None]
    widths = np.maximum(1, np.round(width[:, None] * (1.0 + symmetric(thick, d.width_variation))))
    return drawn, widths.astype(int)


def disk(diameter: int) -> list[tuple[int, int]]:
    """Pixel offsets of a round pen tip of ``diameter`` pixels."""
    r = (diameter - 1) / 2
    span = range(-math.ceil(r), math.ceil(r) + 1)
    return [(dy, dx) for dy in span for dx in span if dy * dy + dx * dx <= r * r + 0.5]


def stamp(pixels: np.ndarray, pen: np.ndarray) -> np.ndarray:
    """Binary 105x105 drawings ``[D, 105, 105]`` uint8 (black ink on white) from dense points
    along the strokes, ``pixels`` ``[D, T, 2]`` integer (x, y), each stamped with a round pen
    of its ``pen`` ``[D, T]`` diameter. No anti-aliasing, as Omniglot's drawings have none."""
    count = len(pixels)
    drawing = np.repeat(np.arange(count), pixels.shape[1])
    x, y, pen = pixels[..., 0].ravel(), pixels[..., 1].ravel(), pen.ravel()
    pad = math.ceil(int(pen.max(initial=1)) / 2) + 1  # > the largest pen radius
    side = CANVAS + 2 * pad
    inside = (x >= -pad) & (x < CANVAS + pad) & (y >= -pad) & (y < CANVAS + pad)
    ink = np.zeros(count * side * side, dtype=bool)
    for diameter in np.flatnonzero(np.bincount(pen[inside])):
        chosen = inside & (pen == diameter)
        dots = np.zeros_like(ink)
        dots[(drawing[chosen] * side + y[chosen] + pad) * side + x[chosen] + pad] = True
        # Stamp the pen tip at every dot (a dilation by a disk), as shifts of the flat canvas:
        # the padding keeps a shift from reaching another row's or drawing's visible pixels.
        for dy, dx in disk(int(diameter)):
            shift = dy * side + dx
            lo, hi = max(0, -shift), len(ink) - max(0, shift)
            ink[lo:hi] |= dots[lo + shift : hi + shift]
    visible = ink.reshape(count, side, side)[:, pad:-pad, pad:-pad]
    return np.where(visible, 0, 255).astype(np.uint8)


class Style(Protocol):
    """How hands vary: ``Distortion`` (the classic renderer) or ``handwriting.Handwriting``."""

    def glyph(self, strokes: list[Stroke]) -> Glyph:
        """The glyph prepared for this style's drawings (sampled densely enough for them)."""
        ...

    def randoms(self, glyph: Glyph) -> int:
        """Uniforms one drawing of ``glyph`` consumes."""
        ...

    def trace(self, glyph: Glyph, uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense points along the strokes ``[D, T, 2]`` in pixels at 105x105 and the pen
        diameter at each ``[D, T]`` (integer), from ``[D, randoms(glyph)]`` uniforms."""
        ...


def render(glyph: Glyph, hand: Hand, count: int, style: Style) -> np.ndarray:
    """``count`` binary 105x105 drawings by one hand's stream, ``[count, 105, 105]`` uint8:
    black ink on white. Drawing k uses the k-th block of the stream, so it is the same
    whatever ``count`` is."""
    uniforms = hand.uniforms(count * style.randoms(glyph)).reshape(count, -1)
    curve, pen = style.trace(glyph, uniforms)
    return stamp(np.round(curve).astype(int), pen)


__all__ = [
    "CANVAS",
    "Distortion",
    "Glyph",
    "Hand",
    "Stroke",
    "Style",
    "normals",
    "parse_path",
    "render",
    "stamp",
]
