"""Drawings that vary the way people's do: the motor noise of Lake et al.'s Bayesian Program
Learning, with its spreads fitted to the Omniglot drawers.

BPL (Lake, Salakhutdinov & Tenenbaum, Science 2015; ``brendenlake/BPL``: the token model of
``classes/MotorProgram.m`` and ``classes/classes_relations/``) draws a type as a token by:
moving each stroke relative to the others (stroke relations), jittering the stroke's control
points (motor noise), an affine of the whole drawing (global scale and translation), then the
ink model (a pen of fixed width, blur and pixel noise). Here every noise is a Gaussian whose
spread was measured (but for the per-point jitter, calibrated) between two people drawing the
same Omniglot character, on the pen trajectories of the Omniglot sample
(``scripts/fit_handwriting.py`` measures them and the same statistics of these drawings, side by
side):

* the glyph is first scaled to the drawers' size (RMS radius of the trajectory about its
  centre) and centred where they drew;
* per stroke, about its centre: a rotation, a log scale and an offset;
* per control point: a jitter of each Bézier segment's end point, its handles moving with it
  (BPL jitters its spline control points), so strokes stay smooth;
* per drawing: rotation, log scale, log aspect, shear and translation;
* the pen: one round pen per drawing (Omniglot's drawing tool had a fixed brush), its width
  Gaussian about the fitted mean. BPL's image model adds blur and pixel flips; Omniglot's
  images have neither (they are binary; a fixed disk pen stamped along their own trajectories
  overlaps their ink with IoU 0.93), so none is added here.

Each spread's zero turns its noise off. Randomness comes from ``strokes.Hand`` uniforms (NumPy's
raw PCG64 output, stable across versions) through Box-Muller, so a seed gives the same bytes on
every machine, in any number of processes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from metarun.data.strokes import CANVAS, Glyph, Stroke, affines, normals


@dataclass(frozen=True)
class Handwriting:
    """Gaussian spreads of one drawing about the character's glyph, in pixels at 105x105.

    Fitted to 40 characters x 20 drawers spread over the Omniglot sample (see the module
    docstring): each is a drawer-to-drawer standard deviation divided by the square root of 2,
    except ``point_std`` (calibrated) and ``knot_spacing`` (chosen), which no direct
    measurement gives.
    """

    size: float = 22.4  # RMS radius of the trajectory about its centre, in pixels
    centre: tuple[float, float] = (51.1, 48.4)  # where the drawers' centre falls (x, y)
    translation_std: float = 5.0  # per axis
    rotation_std_deg: float = 8.5
    log_scale_std: float = 0.131
    log_aspect_std: float = 0.194  # log(x scale / y scale)
    shear_std: float = 0.162
    stroke_offset_std: float = 0.62  # stroke relations: where a stroke lies among the others
    stroke_rotation_std_deg: float = 1.7
    stroke_log_scale_std: float = 0.051
    point_std: float = 1.2  # per control point, per axis; calibrated, see the README
    knot_spacing: float = 5.0  # control points at most this far apart along a stroke
    width: float = 5.84  # pen diameter in pixels
    width_std: float = 0.37

    def __post_init__(self) -> None:
        if not (self.size > 0 and math.isfinite(self.size)):
            raise ValueError(f"size: must be a positive number of pixels, got {self.size!r}")
        if len(self.centre) != 2 or not all(math.isfinite(c) for c in self.centre):
            raise ValueError(f"centre: must be two numbers (x, y), got {self.centre!r}")
        if not (self.knot_spacing > 0 and math.isfinite(self.knot_spacing)):
            raise ValueError(f"knot_spacing: must be a positive length, got {self.knot_spacing!r}")
        if not self.width >= 1:
            raise ValueError(f"width: must be at least 1 pixel, got {self.width!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_std", "_std_deg")):
                if not (value >= 0 and math.isfinite(value)):
                    raise ValueError(f"{f.name}: must be a number at least 0, got {value!r}")

    def fingerprint(self) -> dict[str, Any]:
        return asdict(self)

    def glyph(self, strokes: list[Stroke]) -> Glyph:
        """The glyph with a control point every ``knot_spacing`` pixels or less (the hand's
        wobble along a stroke), sampled densely enough for the scale it will be drawn at."""
        plain = Glyph(strokes)  # sampled for drawing at 105/109 pixels per unit
        grow = self.size / max(trajectory_centre(plain)[1] * CANVAS / plain.box, 1e-6)
        unit = self.knot_spacing / grow * plain.box / CANVAS  # knot spacing in glyph units
        finer = [subdivide(stroke, unit) for stroke in strokes]
        return Glyph(finer, spacing=0.5 / max(1.0, grow * math.exp(3 * self.log_scale_std)))

    def randoms(self, glyph: Glyph) -> int:
        # Normals come in pairs of uniforms: 7 per drawing, 4 per stroke, 2 per control point.
        return 2 * (7 + 4 * glyph.num_strokes + 2 * len(glyph.points))

    def trace(self, glyph: Glyph, uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count, s, p = len(uniforms), glyph.num_strokes, len(glyph.points)
        z = normals(uniforms)  # [D, 7 + 4S + 2P]
        g, per_stroke, per_point = np.split(z, [7, 7 + 4 * s], axis=1)
        # The glyph at the drawers' size, in pixels about the origin.
        centre, radius = trajectory_centre(glyph)
        points = (glyph.points - centre) * (self.size / max(radius, 1e-6))
        # Per stroke: rotation and log scale about its centre, then an offset.
        stroke_centres = np.stack(
            [points[glyph.stroke_of == k].mean(axis=0) for k in range(s)]
        )  # [S, 2]
        turn, grow = per_stroke[:, :s], per_stroke[:, s : 2 * s]
        own = affines(
            self.stroke_rotation_std_deg * turn,
            np.exp(self.stroke_log_scale_std * grow),
            np.exp(self.stroke_log_scale_std * grow),
            np.zeros_like(turn),
        )  # [D, S, 2, 2]
        offset = self.stroke_offset_std * per_stroke[:, 2 * s :].reshape(count, s, 2)
        at = stroke_centres[glyph.stroke_of]  # [P, 2]
        moved = np.einsum("dpij,pj->dpi", own[:, glyph.stroke_of], points - at)
        moved += at + offset[:, glyph.stroke_of]
        # Per control point: segment end points jitter, their handles follow them.
        moved += self.point_std * per_point.reshape(count, p, 2)[:, glyph.anchor_of]
        # Per drawing: an affine about the centre, then a translation.
        log_aspect = self.log_aspect_std * g[:, 2]
        scale = np.exp(self.log_scale_std * g[:, 1])
        whole = affines(
            self.rotation_std_deg * g[:, 0],
            scale * np.exp(log_aspect / 2),
            scale * np.exp(-log_aspect / 2),
            self.shear_std * g[:, 3],
        )  # [D, 2, 2]
        shift = np.asarray(self.centre) + self.translation_std * g[:, 4:6]  # [D, 2]
        drawn = np.einsum("dij,dpj->dpi", whole, moved) + shift[:, None]
        curve = np.einsum("tk,dtkc->dtc", glyph.sample_weights, drawn[:, glyph.sample_controls])
        diameter = np.maximum(1, np.round(self.width + self.width_std * g[:, 6])).astype(int)
        return curve, np.repeat(diameter[:, None], curve.shape[1], axis=1)


def subdivide(stroke: Stroke, longest: float) -> Stroke:
    """The same curve with each cubic segment split (de Casteljau) into pieces whose control
    polygon is at most ``longest`` long."""
    out = [stroke[:1]]
    for first in range(0, len(stroke) - 1, 3):
        segment = stroke[first : first + 4]
        pieces = max(1, math.ceil(np.linalg.norm(np.diff(segment, axis=0), axis=1).sum() / longest))
        for remaining in range(pieces, 0, -1):
            if remaining == 1:
                out.append(segment[1:])
                break
            t = 1.0 / remaining
            a = segment[:-1] + t * np.diff(segment, axis=0)
            b = a[:-1] + t * np.diff(a, axis=0)
            c = b[:1] + t * np.diff(b, axis=0)
            out.append(np.stack([a[0], b[0], c[0]]))
            segment = np.stack([c[0], b[1], a[2], segment[3]])
    return np.concatenate(out)


def trajectory_centre(glyph: Glyph) -> tuple[np.ndarray, float]:
    """The centre and RMS radius, in the glyph's units, of its strokes weighted evenly along
    their length (the statistic the drawers' size was measured as)."""
    dense = np.einsum("tk,tkc->tc", glyph.sample_weights, glyph.points[glyph.sample_controls])
    steps = np.linalg.norm(np.diff(dense, axis=0), axis=1)
    same = glyph.sample_stroke[1:] == glyph.sample_stroke[:-1]
    weight = np.zeros(len(dense))
    weight[1:] += np.where(same, steps, 0) / 2
    weight[:-1] += np.where(same, steps, 0) / 2
    weight = weight / max(weight.sum(), 1e-12)
    centre = (dense * weight[:, None]).sum(axis=0)
    radius = math.sqrt(float((((dense - centre) ** 2).sum(axis=1) * weight).sum()))
    return centre, radius


__all__ = ["Handwriting", "trajectory_centre"]
