"""Measure how people's drawings of one character differ, on the Omniglot sample's pen
trajectories and images, and the same statistics of the kanji renderer's drawings, side by side:
the figures the handwriting renderer's defaults (``metarun.data.handwriting.Handwriting``) were
fitted to.

Every statistic is a spread between two drawers of one character (Lake et al.'s 20 drawers per
character; every pair of the drawings with the character's most common stroke count), in pixels
of the 105x105 canvas, as a robust standard deviation (1.4826 x the median absolute deviation)
halved in variance (a pair's difference holds two drawers' noise):

* global: the least-squares affine taking one drawing's resampled trajectory onto the other's
  (strokes matched by assignment on their centres and shapes, each in its better direction),
  decomposed as ``metarun.data.strokes.affines`` builds one: rotation, log scale, log aspect,
  shear, and the translation of the centre;
* per stroke, after the global affine: the offset of each stroke's centre (stroke relations),
  its log scale and rotation about its centre;
* per point, after each stroke's own similarity: the residual of arc-length-resampled points;
* the pen: for each real image, the pen width whose disk, stamped along the drawing's own
  trajectory, best matches its ink (intersection over union; the trajectory placed to the best
  pixel), and the pixels that disagree even then (the image-level noise); for the renderer, the
  width it was given;
* pixels at 28x28 (resized as Omniglot is): the mean ink and its spread across drawings, and
  the drawing's extent (its trajectory's RMS radius about its centre) and centre.

Kanji are measured on ``--kanji`` characters spread over KanjiVG, drawn by the renderer with its
defaults (or ``--set key=value`` overrides). Run from the repository root::

    python scripts/fit_handwriting.py --root ../shared/data/omniglot
    python scripts/fit_handwriting.py --set point_std=0.8 --set stroke_offset_std=2.5
    python scripts/fit_handwriting.py --renderer classic   # the classic renderer's figures

It prints one row per statistic (Omniglot, kanji, their ratio) and writes them as JSON
(``--out``). scipy (a dev dependency) does the stroke assignment.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from metarun.data.handwriting import Handwriting
from metarun.data.strokes import Distortion, Hand, Style, stamp

POINTS = 16  # resampled points per stroke
MIN_EXTENT = 8.0  # px: strokes smaller than this (dots) get no rotation or scale statistic
ELONGATED = 5.0  # drawings this much longer than wide get no global affine statistic


def read_motor(path: Path) -> list[np.ndarray]:
    """A drawing's strokes as ``[n, 2]`` (column, row) pixel coordinates."""
    strokes, current = [], []
    for line in path.read_text().split():
        if line == "START":
            current = []
        elif line == "BREAK":
            if current:
                strokes.append(np.array(current))
            current = []
        else:
            x, y, _ = (float(v) for v in line.split(","))
            current.append((x, -y))
    return strokes


def resample(stroke: np.ndarray, count: int = POINTS) -> np.ndarray:
    """``count`` points evenly spaced along the stroke's arc length."""
    steps = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    if along[-1] == 0:
        return np.repeat(stroke[:1], count, axis=0)
    where = np.linspace(0, along[-1], count)
    return np.stack([np.interp(where, along, stroke[:, i]) for i in range(2)], axis=1)


def affine_parts(m: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation (deg), log scale, log aspect, shear of ``m = R @ [[1, h], [0, 1]] @ diag(sx,
    sy)``."""
    angle = math.atan2(m[1, 0], m[0, 0])
    c, s = math.cos(angle), math.sin(angle)
    upper = np.array([[c, s], [-s, c]]) @ m
    sx, sy = upper[0, 0], upper[1, 1]
    if sx <= 0 or sy <= 0:
        return math.degrees(angle), math.nan, math.nan, math.nan
    return math.degrees(angle), 0.5 * math.log(sx * sy), math.log(sx / sy), upper[0, 1] / sy


def fit_affine(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``m, t`` minimising ``|| (source - mean) @ m.T + t - target ||``; t moves the centre."""
    s0, t0 = source.mean(0), target.mean(0)
    solution, *_ = np.linalg.lstsq(source - s0, target - t0, rcond=None)
    return solution.T, t0 - s0


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """The rotation (deg) and log scale best taking centred ``source`` onto centred ``target``."""
    a, b = source - source.mean(0), target - target.mean(0)
    dot = (a * b).sum()
    cross = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()
    size_a, size_b = np.sqrt((a**2).sum()), np.sqrt((b**2).sum())
    if size_a == 0 or size_b == 0:  # a dot: no rotation or scale
        return math.nan, math.nan
    return math.degrees(math.atan2(cross, dot)), math.log(size_b / size_a)


def rotate(points: np.ndarray, degrees: float, scale: float) -> np.ndarray:
    a = math.radians(degrees)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * math.exp(scale)
    centre = points.mean(0)
    return (points - centre) @ r.T + centre


def match(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
    """``b``'s strokes in the order (and direction) that best correspond to ``a``'s."""
    cost = np.zeros((len(a), len(b)))
    ca = np.stack([s.mean(0) for s in a]) - np.concatenate(a).mean(0)
    cb = np.stack([s.mean(0) for s in b]) - np.concatenate(b).mean(0)
    for i, sa in enumerate(a):
        for j, sb in enumerate(b):
            shape = min(
                np.abs((sa - sa.mean(0)) - (sb - sb.mean(0))).mean(),
                np.abs((sa - sa.mean(0)) - (sb[::-1] - sb.mean(0))).mean(),
            )
            cost[i, j] = np.linalg.norm(ca[i] - cb[j]) + shape
    _, order = linear_sum_assignment(cost)
    out = []
    for sa, j in zip(a, order, strict=True):
        sb = b[j]
        forward = np.abs(sa - sb).sum() <= np.abs(sa - sb[::-1]).sum()
        out.append(sb if forward else sb[::-1])
    return out


def pair_statistics(a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, list[float]]:
    """One pair of drawings' differences (resampled strokes, ``b`` matched to ``a``)."""
    stats: dict[str, list[float]] = {}

    def add(name: str, *values: float) -> None:
        stats.setdefault(name, []).extend(v for v in values if math.isfinite(v))

    whole_a, whole_b = np.concatenate(a), np.concatenate(b)
    m, t = fit_affine(whole_b, whole_a)
    add("translation", *t)
    spread = np.linalg.svd(whole_b - whole_b.mean(0), compute_uv=False)
    if spread[1] < spread[0] / ELONGATED:  # nearly a line: its affine is ill-determined
        m = np.eye(2)
    else:
        rotation, log_scale, log_aspect, shear = affine_parts(m)
        add("rotation_deg", rotation)
        add("log_scale", log_scale)
        add("log_aspect", log_aspect)
        add("shear", shear)
    centre_b = whole_b.mean(0)
    moved = [(s - centre_b) @ m.T + centre_b + t for s in b]
    for sa, sb in zip(a, moved, strict=True):
        add("stroke_offset", *(sb.mean(0) - sa.mean(0)))
        if np.ptp(sa, axis=0).max() >= MIN_EXTENT:
            angle, scale = similarity(sb, sa)
            add("stroke_rotation_deg", angle)
            add("stroke_log_scale", scale)
            aligned = rotate(sb, angle, scale) - sb.mean(0) + sa.mean(0)
            add("point", *(aligned - sa).ravel())
    return stats


def character_statistics(drawings: list[list[np.ndarray]], matched: bool) -> dict:
    """Pairwise spreads among one character's drawings of its most common stroke count."""
    counts = Counter(len(d) for d in drawings)
    modal = counts.most_common(1)[0][0]
    kept = [[resample(s) for s in d] for d in drawings if len(d) == modal]
    stats: dict[str, list[float]] = {}
    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            other = match(kept[i], kept[j]) if matched else kept[j]
            for name, values in pair_statistics(kept[i], other).items():
                stats.setdefault(name, []).extend(values)
    return stats


def extent(drawing: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """RMS radius and centre of a drawing's trajectory, resampled evenly along its length."""
    points = np.concatenate([resample(s, max(2, int(length(s)))) for s in drawing])
    centre = points.mean(0)
    return float(np.sqrt(((points - centre) ** 2).sum(1).mean())), centre


def length(stroke: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(stroke, axis=0), axis=1).sum())


def dense(drawing: list[np.ndarray]) -> list[np.ndarray]:
    """Each stroke with points at most half a pixel apart."""
    return [resample(s, max(2, int(2 * length(s)) + 2)) for s in drawing]


def ink_along(drawing: list[np.ndarray], diameter: int, shift: tuple[int, int]) -> np.ndarray:
    """The ink mask of a ``diameter`` pen stamped along the drawing, moved by ``shift``."""
    points = np.round(np.concatenate(dense(drawing))).astype(int) + np.array(shift)
    return stamp(points[None], np.full((1, len(points)), diameter)) == 0


def pen_fit(drawing: list[np.ndarray], ink: np.ndarray) -> tuple[int, float, float]:
    """The pen diameter and placement whose stamp best matches ``ink`` (IoU); its IoU and the
    fraction of the image's ink pixels that disagree with it."""
    best = (0, -1.0, 1.0)
    for shift in [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]:
        for diameter in range(1, 9):
            drawn = ink_along(drawing, diameter, shift)[0]
            iou = (drawn & ink).sum() / max(1, (drawn | ink).sum())
            if iou > best[1]:
                best = (diameter, iou, (drawn ^ ink).sum() / max(1, ink.sum()))
    return best


def small(ink: np.ndarray) -> np.ndarray:
    """A 105x105 ink mask as the 28x28 ink image the data sets decode (Lanczos)."""
    image = Image.fromarray(np.where(ink, 0, 255).astype(np.uint8), mode="L")
    return 1.0 - np.asarray(image.resize((28, 28), Image.Resampling.LANCZOS)) / 255.0


def omniglot(root: Path, limit: int | None) -> dict[str, list[tuple[list, np.ndarray]]]:
    """``{character: [(strokes, ink mask), ...]}`` of the sample (both small folders)."""
    found: dict[str, list] = {}
    for folder in ("small1", "small2"):
        for motor in sorted((root / f"strokes_background_{folder}").glob("*/*/*.txt")):
            key = f"{motor.parent.parent.name}/{motor.parent.name}"
            image = root / f"images_background_{folder}" / key / motor.with_suffix(".png").name
            ink = ~np.asarray(Image.open(image).convert("1"), dtype=bool)
            found.setdefault(key, []).append((read_motor(motor), ink))
    keys = sorted(found)
    if limit:
        keys = keys[:: max(1, len(keys) // limit)][:limit]
    return {k: found[k] for k in keys}


def kanji(count: int, style: Style) -> dict[str, list[tuple[list, np.ndarray]]]:
    """The renderer's drawings of ``count`` characters: trajectories, ink and the pen given."""
    from metarun.data.kanji import glyph_files, is_ideograph, read_strokes, spread

    codes = spread(sorted(c for c in glyph_files() if is_ideograph(c)), count)
    found = {}
    for code in codes:
        glyph = style.glyph(read_strokes(glyph_files()[code]))
        uniforms = Hand(0, code).uniforms(20 * style.randoms(glyph)).reshape(20, -1)
        curves, pens = style.trace(glyph, uniforms)
        inks = stamp(np.round(curves).astype(int), pens) == 0
        found[code] = [
            (
                [curves[k][glyph.sample_stroke == s] for s in range(glyph.num_strokes)]
                + [float(pens[k].mean())],  # the pen it was given, popped by measure()
                inks[k],
            )
            for k in range(20)
        ]
    return found


def robust_std(values: list[float]) -> float:
    """1.4826 x the median absolute deviation: a normal's std, unmoved by the few pairs whose
    strokes were matched wrongly or drawn differently."""
    v = np.asarray(values)
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def measure(characters: dict[str, list], matched: bool, fit_pen: bool) -> dict[str, float]:
    pooled: dict[str, list[float]] = {}
    pens, ious, flips, inks, radii, centres, strokes, spans = [], [], [], [], [], [], [], []
    for drawings in characters.values():
        trajectories = []
        for strokes_of, ink in drawings:
            given = strokes_of.pop() if not fit_pen else None
            trajectories.append(strokes_of)
            if fit_pen:
                diameter, iou, flip = pen_fit(strokes_of, ink)
                ious.append(iou)
                flips.append(flip)
            else:
                diameter = given
            pens.append(diameter)
            inks.append(small(ink).mean())
            radius, centre = extent(strokes_of)
            radii.append(radius)
            spans.append(float(np.ptp(np.concatenate(strokes_of), axis=0).max()))
            centres.append(centre)
            strokes.append(len(strokes_of))
        for name, values in character_statistics(trajectories, matched).items():
            pooled.setdefault(name, []).extend(values)
    figures = {f"{k} (std)": robust_std(v) / math.sqrt(2) for k, v in pooled.items()}
    figures |= {
        "pen width px (mean)": float(np.mean(pens)),
        "pen width px (std)": float(np.std(pens)),
        "ink at 28x28 (mean)": float(np.mean(inks)),
        "ink at 28x28 (std)": float(np.std(inks)),
        "radius px (mean)": float(np.mean(radii)),
        "radius px (std)": float(np.std(radii)),
        "extent px (mean)": float(np.mean(spans)),
        "extent px (std)": float(np.std(spans)),
        "centre column px (mean)": float(np.mean([c[0] for c in centres])),
        "centre row px (mean)": float(np.mean([c[1] for c in centres])),
        "strokes (mean)": float(np.mean(strokes)),
    }
    if fit_pen:
        figures["pen fit IoU (mean)"] = float(np.mean(ious))
        figures["ink pixels off the pen fit (mean)"] = float(np.mean(flips))
    return figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/omniglot")
    parser.add_argument("--characters", type=int, default=None, help="Omniglot: all (242)")
    parser.add_argument("--kanji", type=int, default=200, help="kanji characters measured")
    parser.add_argument("--renderer", choices=("handwriting", "classic"), default="handwriting")
    parser.add_argument("--set", action="append", default=[], help="renderer key=value")
    parser.add_argument("--out", default=None, help="JSON of the figures")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = float(value)
    root = Path(args.root)
    if not (root / "strokes_background_small1").is_dir():
        sys.exit(f"fit_handwriting.py: --root: {root} has no strokes_background_small1")
    real = measure(omniglot(root, args.characters), matched=True, fit_pen=True)
    style = (Handwriting if args.renderer == "handwriting" else Distortion)(**overrides)
    drawn = measure(kanji(args.kanji, style), matched=False, fit_pen=False)
    print(f"{'statistic':36} {'Omniglot':>9} {'kanji':>9} {'ratio':>7}")
    for name, value in real.items():
        other = drawn.get(name, math.nan)
        ratio = other / value if value else math.nan
        print(f"{name:36} {value:9.3f} {other:9.3f} {ratio:7.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"omniglot": real, "kanji": drawn}, indent=2))


if __name__ == "__main__":
    main()
