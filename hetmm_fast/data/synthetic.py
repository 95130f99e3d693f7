"""Embedded synthetic dataset in MVTec AD layout: what the demo runs on when no real data is at hand.

Nothing is downloaded: :func:`make_dataset` draws every image procedurally (numpy, PIL drawing, scipy.ndimage),
deterministically from a seed, in a few seconds. Four categories:

=========  =======  ===========================================================  ==============================
category   kind     normal variation (what a naive detector may mistake)          defect types
=========  =======  ===========================================================  ==============================
carpet     texture  twill weave, per-thread tone, fibre fuzz, rotation, light     hole, stain, contamination
wood       texture  grain warp, pores, knots in some normal boards, light         scratch, crack, stain
pill       object   pose jitter, random red speckles, highlight, imprint          crack, contamination, print
nut        object   pose jitter, turning marks, moving reflection                 scratch, missing_part, stain
=========  =======  ===========================================================  ==============================

Every defect image is made from a normal image of the same random stream: the defect is rendered on the clean
normal image, its mask is the set of pixels whose colour moved by more than ``_MASK_THRESHOLD`` (holes filled),
and outside the mask the defect image equals the normal image exactly (same sensor noise, same bytes).
:func:`render_sample` returns both, for tests and debugging.

Command line: ``python -m hetmm_fast.data.synthetic ROOT [--seed N] [--overwrite]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

__all__ = [
    "GENERATOR_VERSION",
    "SYNTHETIC_CATEGORIES",
    "DEFECT_TYPES",
    "INFO_FILE",
    "SyntheticSample",
    "render_sample",
    "make_dataset",
]

GENERATOR_VERSION = 1
SYNTHETIC_CATEGORIES = ("carpet", "wood", "pill", "nut")
TEXTURE_CATEGORIES = ("carpet", "wood")
DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "carpet": ("contamination", "hole", "stain"),
    "wood": ("crack", "scratch", "stain"),
    "pill": ("contamination", "crack", "print"),
    "nut": ("missing_part", "scratch", "stain"),
}
INFO_FILE = "dataset_info.json"

# A defect pixel is one whose clean colour moved by more than this (max over channels, colours in [0, 1]).
_MASK_THRESHOLD = 0.03
_SUPERSAMPLE = 4  # PIL shapes are drawn at 4x and box-filtered down: antialiased edges.
_MAX_DEFECT_TRIES = 8

_F32 = np.float32


# ---------------------------------------------------------------------------------------------------------------
# Numeric helpers. Images are float32 [3, S, S] in [0, 1] while drawing (channels first: numpy broadcasts a colour
# over whole planes much faster than over a trailing axis of 3) and uint8 [S, S, 3] once finished. Coordinates are
# pixel centres 0..S-1, x to the right, y down.


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(yy, xx)``, each ``[S, S]`` float32, read-only (cached)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(_F32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _noise(rng: np.random.Generator, size: int, cell_y: float, cell_x: float | None = None) -> np.ndarray:
    """Smooth noise ``[S, S]`` with features about ``cell_y`` x ``cell_x`` pixels (bicubic-upsampled white noise)."""
    cell_x = cell_y if cell_x is None else cell_x
    # Cells of a pixel or less: white noise along that axis, drawn at full resolution (no resampling there).
    ny = size if cell_y <= 1.0 else max(2, int(round(size / cell_y)) + 1)
    nx = size if cell_x <= 1.0 else max(2, int(round(size / cell_x)) + 1)
    coarse = rng.standard_normal((ny, nx), dtype=_F32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=_F32)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lighting(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """Multiplicative illumination ``[S, S]``: a linear gradient in a random direction and a soft vignette."""
    t = np.arange(size, dtype=_F32) * (2.0 / size) - 1.0
    angle = rng.uniform(0.0, 2.0 * np.pi)
    slope = strength * rng.uniform(0.4, 1.0)
    vignette = 0.5 * strength * rng.uniform(0.3, 1.0)
    along_x = 1.0 + slope * math.cos(angle) * t - vignette * t * t
    along_y = slope * math.sin(angle) * t - vignette * t * t
    return along_y[:, None] + along_x[None, :]


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]], dtype=np.float64)


class _Canvas:
    """Supersampled PIL canvas; :meth:`alpha` returns the antialiased coverage ``[S, S]`` in [0, 1]."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.image = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
        self.draw = ImageDraw.Draw(self.image)

    @staticmethod
    def _xy(points: np.ndarray) -> list[tuple[float, float]]:
        # Pixel centre x maps to the supersampled continuous coordinate (x + 0.5) * ss.
        scaled = (np.asarray(points, dtype=np.float64) + 0.5) * _SUPERSAMPLE
        return [(float(x), float(y)) for x, y in scaled]

    def polygon(self, points: np.ndarray, value: int = 255) -> None:
        self.draw.polygon(self._xy(points), fill=value)

    def disc(self, center: Sequence[float], radius: float, value: int = 255) -> None:
        (cx, cy), r = self._xy(np.array([center]))[0], radius * _SUPERSAMPLE
        self.draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=value)

    def polyline(self, points: np.ndarray, widths: np.ndarray | float, value: int = 255) -> None:
        """Open polyline with a (possibly varying) width in pixels; round joints."""
        xy = self._xy(points)
        widths = np.broadcast_to(np.asarray(widths, dtype=np.float64), (len(xy),))
        for i in range(len(xy) - 1):
            w = max(1, int(round(0.5 * (widths[i] + widths[i + 1]) * _SUPERSAMPLE)))
            self.draw.line([xy[i], xy[i + 1]], fill=value, width=w)
            r = 0.5 * w
            x, y = xy[i + 1]
            self.draw.ellipse([x - r, y - r, x + r, y + r], fill=value)

    def alpha(self) -> np.ndarray:
        out = np.zeros((self.size, self.size), dtype=_F32)
        box = self.image.getbbox()
        if box is None:
            return out
        # Downsample only the drawn part (aligned to whole output pixels): most shapes are small.
        x0, y0 = box[0] // _SUPERSAMPLE, box[1] // _SUPERSAMPLE
        x1, y1 = -(-box[2] // _SUPERSAMPLE), -(-box[3] // _SUPERSAMPLE)
        part = self.image.crop((x0 * _SUPERSAMPLE, y0 * _SUPERSAMPLE, x1 * _SUPERSAMPLE, y1 * _SUPERSAMPLE))
        out[y0:y1, x0:x1] = np.asarray(part.resize((x1 - x0, y1 - y0), Image.Resampling.BOX), dtype=_F32)
        return out * (1.0 / 255.0)


def _curve(
    rng: np.random.Generator, start: np.ndarray, angle: float, length: float, wiggle: float, n: int = 40
) -> np.ndarray:
    """Random smooth open curve ``[n + 1, 2]``: a walk whose heading drifts by ``wiggle`` radians per step."""
    turns = ndimage.uniform_filter1d(rng.normal(0.0, wiggle, n), size=5, mode="nearest")
    heading = angle + np.cumsum(turns)
    steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * (length / n)
    return np.vstack([start, start + np.cumsum(steps, axis=0)])


def _blob(
    rng: np.random.Generator, center: np.ndarray, radius: float, roughness: float = 0.3, aspect: float = 1.0
) -> np.ndarray:
    """Irregular closed polygon ``[64, 2]`` around ``center``: a circle with random low harmonics."""
    t = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    r = np.ones_like(t)
    for harmonic in range(2, 7):
        r += roughness / harmonic * rng.normal() * np.cos(harmonic * t + rng.uniform(0.0, 2.0 * np.pi))
    r = radius * np.clip(r, 0.4, None)
    pts = np.stack([r * np.cos(t) * aspect, r * np.sin(t)], axis=1)
    return _rotate(pts, rng.uniform(0.0, np.pi)) + center


def _pick_point(rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    """Uniform random pixel ``(x, y)`` where ``allowed`` (bool ``[S, S]``) is True."""
    flat = np.flatnonzero(allowed)
    idx = int(flat[rng.integers(len(flat))])
    return np.array([idx % allowed.shape[1], idx // allowed.shape[1]], dtype=np.float64)


def _rgb(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """An RGB colour (or per-pixel colour ``[3, S, S]``) shaped to broadcast against ``[3, S, S]`` images."""
    arr = np.asarray(values, dtype=_F32)
    return arr.reshape(3, 1, 1) if arr.ndim == 1 else arr


def _tint(image: np.ndarray, alpha: np.ndarray, factor: Sequence[float]) -> np.ndarray:
    """Multiply the colour by ``factor`` (RGB) where ``alpha`` (``[S, S]``) is 1, blending in between."""
    return image * (1.0 + alpha * (_rgb(factor) - 1.0))


def _paint(image: np.ndarray, alpha: np.ndarray, colour: Sequence[float] | np.ndarray) -> np.ndarray:
    """Cover ``image`` (``[3, S, S]``) with ``colour`` in proportion to ``alpha`` (``[S, S]``)."""
    return image + alpha * (_rgb(colour) - image)


# ---------------------------------------------------------------------------------------------------------------
# Scenes: a clean normal image plus what the defect painters need.


@dataclass
class _Scene:
    image: np.ndarray  # [3, S, S] clean normal image
    allowed: np.ndarray  # [S, S] bool: where a defect may be centred
    fg: np.ndarray | None = None  # [S, S] object coverage (objects only)
    extra: dict = field(default_factory=dict)


def _texture_allowed(size: int) -> np.ndarray:
    allowed = np.zeros((size, size), dtype=bool)
    lo, hi = int(0.15 * size), int(0.85 * size)
    allowed[lo:hi, lo:hi] = True
    return allowed


def _render_carpet(rng: np.random.Generator, size: int) -> _Scene:
    k = size / 256.0
    yy, xx = _grid(size)
    angle = math.radians(rng.uniform(-2.5, 2.5))
    c, s = math.cos(angle), math.sin(angle)
    pitch = 7.0 * k
    u = (xx * c + yy * s + rng.uniform(0, 4 * pitch) + 0.3 * pitch * _noise(rng, size, 40 * k)) / pitch
    v = (-xx * s + yy * c + rng.uniform(0, 4 * pitch) + 0.3 * pitch * _noise(rng, size, 40 * k)) / pitch
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    # 2/2 twill: the warp (vertical) thread floats over two cells, then the weft (horizontal) one does.
    phase = np.mod(iu + iv, 4.0)
    over = phase < 2.0
    along_warp = (phase + fv) * 0.5
    along_weft = (phase - 2.0 + fu) * 0.5
    warp_h = np.sqrt(np.abs(np.sin(np.pi * fu))) * (0.55 + 0.45 * np.sin(np.pi * np.clip(along_warp, 0, 1)))
    weft_h = np.sqrt(np.abs(np.sin(np.pi * fv))) * (0.55 + 0.45 * np.sin(np.pi * np.clip(along_weft, 0, 1)))
    height = np.where(over, warp_h, weft_h)
    tones = rng.normal(0.0, 0.06, size=(2, 1024)).astype(_F32)
    tone = np.where(over, tones[0][iu.astype(np.int64) % 1024], tones[1][iv.astype(np.int64) % 1024])
    fuzz = np.where(over, _noise(rng, size, 5 * k, 0.8 * k), _noise(rng, size, 0.8 * k, 5 * k))
    shade = (0.3 + 0.7 * height) * (1.0 + tone + 0.08 * fuzz)
    shade = ndimage.gaussian_filter(shade, 0.6 * k)
    mottle = 1.0 + 0.05 * _noise(rng, size, 60 * k) + 0.025 * _noise(rng, size, 14 * k)
    shade = shade * mottle * _lighting(rng, size, 0.10)
    balance = 1.0 + rng.normal(0.0, 0.015, 3)
    warp_col = np.array([0.64, 0.50, 0.38]) * balance
    weft_col = np.array([0.56, 0.45, 0.35]) * balance
    image = _rgb(weft_col) * shade + _rgb(warp_col - weft_col) * (shade * over)
    return _Scene(image, _texture_allowed(size), extra={"k": k})


def _render_wood(rng: np.random.Generator, size: int) -> _Scene:
    k = size / 256.0
    yy, xx = _grid(size)
    angle = math.radians(rng.uniform(-3.0, 3.0))
    across = xx * math.cos(angle) + yy * math.sin(angle)
    spacing = rng.uniform(11.0, 14.0) * k
    t = (
        across
        + 9 * k * _noise(rng, size, 220 * k, 110 * k)
        + 2 * k * _noise(rng, size, 50 * k, 16 * k)
    ) / spacing + rng.uniform(0.0, 1.0)
    knot_core = np.zeros_like(t)
    if rng.uniform() < 0.35:
        # A knot in a normal board: rings bulge around it and its core is dark. It is normal, not a defect.
        kx, ky = (float(v) for v in rng.uniform(0.2, 0.8, 2) * size)
        sx, sy = rng.uniform(10, 16) * k, rng.uniform(18, 30) * k
        bump = np.exp(-(((xx - kx) / sx) ** 2 + ((yy - ky) / sy) ** 2))
        t = t + rng.uniform(1.5, 2.5) * bump
        knot_core = 0.45 * np.exp(-(((xx - kx) / (0.35 * sx)) ** 2 + ((yy - ky) / (0.35 * sy)) ** 2))
    ring = t - np.floor(t)
    late = ring * ring * ring
    pores = _noise(rng, size, 12 * k, 0.9 * k)
    tone = 0.55 * late + 0.06 * pores + 0.07 * _noise(rng, size, 40 * k, 10 * k) + knot_core
    tone = np.clip(tone + 0.5 * knot_core * late, 0.0, 1.0)
    light = np.array([0.82, 0.63, 0.44]) * (1.0 + rng.normal(0.0, 0.015, 3))
    dark = np.array([0.50, 0.31, 0.18])
    image = (_rgb(light) + _rgb(dark - light) * tone) * _lighting(rng, size, 0.10)
    return _Scene(image, _texture_allowed(size), extra={"k": k})


# The pill's imprint: strokes in pill-local units of 1/256 of the image side (x along the pill's long axis).
_PILL_IMPRINT = (
    np.array([[-24.0, -9.0], [-24.0, 9.0]]),
    np.array([[-13.0, -9.0], [-13.0, 9.0]]),
    np.array([[-24.0, 0.0], [-13.0, 0.0]]),
    np.array([[2.0, 9.0], [2.0, -9.0], [11.0, 3.0], [20.0, -9.0], [20.0, 9.0]]),
)


def _stadium_distance(
    xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, angle: float, half_len: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance ``[S, S]`` to the segment of half-length ``half_len`` centred at (cx, cy), plus local coords."""
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(angle), math.sin(angle)
    along = dx * c + dy * s
    across = dy * c - dx * s
    beyond = np.maximum(np.abs(along) - half_len, 0.0)
    return np.sqrt(beyond * beyond + across * across), along, across


def _render_pill(rng: np.random.Generator, size: int) -> _Scene:
    k = size / 256.0
    yy, xx = _grid(size)
    cx, cy = (float(v) for v in size / 2 + rng.uniform(-5, 5, 2) * k)
    angle = math.radians(rng.uniform(-4.0, 4.0))
    half_len, radius = 66.0 * k, 44.0 * k
    dist, along, across = _stadium_distance(xx, yy, cx, cy, angle, half_len)
    sdf = dist - radius
    fg = np.clip(0.5 - sdf, 0.0, 1.0)
    rel = dist * (1.0 / radius)
    height = np.sqrt(np.sqrt(np.clip(1.0 - rel * rel, 0.0, 1.0)))
    band = (across + 0.35 * radius) * (1.0 / (10 * k))
    highlight = np.exp(-band * band) * _smoothstep(half_len + 0.6 * radius, half_len - 0.2 * radius, np.abs(along))
    brightness = (0.62 + 0.36 * height + 0.08 * highlight) * _lighting(rng, size, 0.05)
    grain = 0.02 * _noise(rng, size, 2 * k) + 0.02 * _noise(rng, size, 12 * k)
    body = _rgb([0.92, 0.89, 0.83]) * (brightness + grain)

    # Red speckles: many, in random places, different in every pill — normal.
    speckles = _Canvas(size)
    inside = np.flatnonzero(sdf < -4 * k)
    for idx in inside[rng.integers(len(inside), size=int(rng.integers(18, 40)))]:
        speckles.disc((idx % size, idx // size), rng.uniform(0.6, 1.6) * k)
    speckle_alpha = speckles.alpha() * rng.uniform(0.5, 0.9)
    body = _paint(body, speckle_alpha, np.array([0.72, 0.30, 0.25]) * float(brightness.mean()))

    imprint_canvas = _Canvas(size)
    for stroke in _PILL_IMPRINT:
        imprint_canvas.polyline(_rotate(stroke * k, angle) + (cx, cy), 2.4 * k)
    imprint_alpha = imprint_canvas.alpha() * 0.85
    ink = _rgb([0.42, 0.38, 0.36])
    surface = body
    body = _paint(body, imprint_alpha, ink)

    # A soft shadow below-right of the pill, from the distance to a shifted copy of its axis.
    shadow_dist, _, _ = _stadium_distance(xx, yy, cx + 3 * k, cy + 4 * k, angle, half_len)
    shade = 0.07 * (1.0 + 0.15 * _noise(rng, size, 50 * k) + 0.05 * _noise(rng, size, 3 * k))
    shade = shade * (1.0 - 0.5 * _smoothstep(radius + 6 * k, radius - 6 * k, shadow_dist))
    background = np.broadcast_to(shade, (3, size, size))
    image = background + (body - background) * fg
    return _Scene(
        image,
        sdf < -8 * k,
        fg=fg,
        extra={
            "k": k,
            "background": background,
            "surface": surface,
            "imprint_alpha": imprint_alpha,
            "ink": ink,
        },
    )


def _render_nut(rng: np.random.Generator, size: int) -> _Scene:
    k = size / 256.0
    yy, xx = _grid(size)
    cx, cy = (float(v) for v in size / 2 + rng.uniform(-6, 6, 2) * k)
    angle = math.radians(rng.uniform(-7.0, 7.0))
    circum = 96.0 * k
    inradius = circum * math.cos(math.pi / 6)
    dx, dy = xx - cx, yy - cy
    r = np.sqrt(dx * dx + dy * dy)
    c, s = math.cos(angle), math.sin(angle)
    lx, ly = dx * c + dy * s, dy * c - dx * s
    # Regular hexagon with flat sides: distance to the farthest of its three pairs of parallel sides.
    h = math.sqrt(3.0) / 2.0
    side = np.maximum(np.abs(lx), np.maximum(np.abs(0.5 * lx + h * ly), np.abs(0.5 * lx - h * ly)))
    sdf_hex = side - inradius
    hole_r = 34.0 * k
    fg = np.clip(0.5 - sdf_hex, 0.0, 1.0) * np.clip(r - hole_r + 0.5, 0.0, 1.0)

    # Everything that depends on the radius only goes through 1-D profiles: turning marks (concentric rings of
    # random tone), the chamfer around the flat face, the thread inside the hole.
    radii = np.arange(0.0, 1.5 * size, 0.25)
    knots = np.arange(0.0, 1.5 * size + 2.0 * k, 1.3 * k)
    rings = np.interp(radii, knots, rng.normal(0.0, 1.0, len(knots)))
    face_r = 0.92 * inradius
    chamfer = _smoothstep(face_r - 1.5 * k, face_r + 1.5 * k, radii)
    thread = _smoothstep(hole_r + 9 * k, hole_r + 7 * k, radii)
    base_profile = 0.60 + 0.025 * rings - 0.12 * chamfer
    thread_profile = 1.0 - 0.35 * thread * (0.6 + 0.4 * np.sin(2.0 * np.pi * radii / (2.2 * k)))
    # Nearest entry of a 1/4-pixel table: a gather, much cheaper than np.interp on every pixel.
    at = np.minimum((r * 4.0 + 0.5).astype(np.intp), len(radii) - 1)
    base = base_profile.astype(_F32)[at]
    chamfer_px = chamfer.astype(_F32)[at]
    thread_px = thread_profile.astype(_F32)[at]

    # A reflection that moves with the light direction: cos(2 (theta - light)); the chamfer lights on one side.
    light = rng.uniform(-0.5, 0.5) + math.pi / 4
    inv_r = 1.0 / np.maximum(r, 1e-3)
    cos_rel = (dx * math.cos(light) + dy * math.sin(light)) * inv_r
    shade = base + 0.12 * (2.0 * cos_rel * cos_rel - 1.0) - 0.10 * chamfer_px * cos_rel
    shade = (shade + 0.02 * _noise(rng, size, 1.5 * k)) * thread_px
    bevel = _smoothstep(-3.0 * k, 0.0, sdf_hex)
    shade = shade * (1.0 - 0.25 * bevel) * _lighting(rng, size, 0.06)
    body = _rgb(np.array([0.64, 0.65, 0.68]) * (1.0 + rng.normal(0.0, 0.01, 3))) * shade

    background = _rgb([0.16, 0.17, 0.20]) * (
        1.0 + 0.12 * _noise(rng, size, 60 * k) + 0.04 * _noise(rng, size, 2 * k)
    )
    image = background + (body - background) * fg
    allowed = (sdf_hex < -8 * k) & (r > hole_r + 12 * k)
    return _Scene(
        image,
        allowed,
        fg=fg,
        extra={"k": k, "background": background, "body": body, "center": (cx, cy), "circum": circum, "angle": angle},
    )


# ---------------------------------------------------------------------------------------------------------------
# Defect painters: (scene, rng) -> defective clean image. Only their pixel difference to scene.image matters.


def _hair(scene: _Scene, rng: np.random.Generator, colour: Sequence[float], width: tuple[float, float]) -> np.ndarray:
    k, size = scene.extra["k"], scene.image.shape[-1]
    canvas = _Canvas(size)
    curve = _curve(rng, _pick_point(rng, scene.allowed), rng.uniform(0, 2 * np.pi), rng.uniform(35, 80) * k, 0.12)
    canvas.polyline(curve, np.linspace(width[1], width[0], len(curve)) * k)
    return _paint(scene.image, canvas.alpha() * 0.9, np.asarray(colour))


def _carpet_contamination(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    if rng.uniform() < 0.5:
        return _hair(scene, rng, (0.12, 0.09, 0.08), (1.2, 1.8))
    # A clump of foreign fibres of a colour the carpet does not have.
    k, size = scene.extra["k"], scene.image.shape[-1]
    canvas = _Canvas(size)
    base = _pick_point(rng, scene.allowed)
    for _ in range(int(rng.integers(4, 9))):
        start = base + rng.normal(0, 4 * k, 2)
        canvas.polyline(_curve(rng, start, rng.uniform(0, 2 * np.pi), rng.uniform(8, 20) * k, 0.3, 12), 1.3 * k)
    colour = np.array([[0.25, 0.35, 0.70], [0.20, 0.55, 0.30], [0.85, 0.80, 0.75]])[rng.integers(3)]
    return _paint(scene.image, canvas.alpha() * 0.95, colour)


def _carpet_hole(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    k, size = scene.extra["k"], scene.image.shape[-1]
    canvas = _Canvas(size)
    center = _pick_point(rng, scene.allowed)
    canvas.polygon(_blob(rng, center, rng.uniform(8, 15) * k, roughness=0.5, aspect=rng.uniform(0.7, 1.4)))
    hole = canvas.alpha()
    # Torn fibres around the hole stand up and catch the light; the hole shows the dark backing with loose ends.
    rim = np.clip(ndimage.gaussian_filter(hole, 2.5 * k) * 2.2 - hole, 0.0, 1.0)
    frayed = 1.0 + rim * np.clip(0.45 + 0.35 * _noise(rng, size, 1.2 * k), 0.0, None)
    depth = 0.05 + 0.10 * np.clip(_noise(rng, size, 1.5 * k, 4 * k), 0.0, None)
    return _paint(scene.image * frayed, hole, _rgb([1.0, 0.9, 0.85]) * depth)


def _soft_blob(scene: _Scene, rng: np.random.Generator, radius: tuple[float, float], blur: float) -> np.ndarray:
    k, size = scene.extra["k"], scene.image.shape[-1]
    canvas = _Canvas(size)
    canvas.polygon(
        _blob(rng, _pick_point(rng, scene.allowed), rng.uniform(*radius) * k, 0.45, rng.uniform(0.6, 1.6))
    )
    alpha = ndimage.gaussian_filter(canvas.alpha(), blur * k)
    if scene.fg is not None:
        alpha = alpha * scene.fg
    return alpha


def _carpet_stain(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    alpha = _soft_blob(scene, rng, (10, 22), 2.5) * rng.uniform(0.7, 0.95)
    factor = np.array([[0.55, 0.32, 0.25], [0.45, 0.45, 0.55], [0.40, 0.35, 0.25]])[rng.integers(3)]
    return _tint(scene.image, alpha, factor)


def _scratch(
    scene: _Scene, rng: np.random.Generator, colour: Sequence[float], length: tuple[float, float]
) -> np.ndarray:
    k, size = scene.extra["k"], scene.image.shape[-1]
    canvas = _Canvas(size)
    curve = _curve(rng, _pick_point(rng, scene.allowed), rng.uniform(0, 2 * np.pi), rng.uniform(*length) * k, 0.03)
    canvas.polyline(curve, rng.uniform(1.0, 1.8) * k)
    alpha = canvas.alpha() * rng.uniform(0.65, 0.9)
    if scene.fg is not None:
        alpha = alpha * scene.fg
    return _paint(scene.image, alpha, np.asarray(colour))


def _wood_scratch(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    return _scratch(scene, rng, (0.93, 0.82, 0.68), (50, 120))


def _crack_curve(scene: _Scene, rng: np.random.Generator, angle: float, length: float) -> np.ndarray:
    """A jagged crack: random walk with sharp heading changes and a tapering width, as alpha ``[S, S]``."""
    k, size = scene.extra["k"], scene.image.shape[-1]
    canvas = _Canvas(size)
    n = 24
    curve = _curve(rng, _pick_point(rng, scene.allowed), angle, length, 0.06, n)
    curve[1:-1] += rng.normal(0.0, 0.6 * k, (n - 1, 2))
    widths = (2.6 * k) * np.sin(np.linspace(0.15, np.pi - 0.15, n + 1)) ** 0.7
    canvas.polyline(curve, widths)
    if rng.uniform() < 0.6:
        at = int(rng.integers(n // 4, 3 * n // 4))
        branch = _curve(rng, curve[at], angle + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9), length * 0.3, 0.2, 8)
        canvas.polyline(branch, np.linspace(widths[at] * 0.7, 0.6 * k, len(branch)))
    return canvas.alpha()


def _wood_crack(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    k = scene.extra["k"]
    along_grain = np.pi / 2 + rng.uniform(-0.3, 0.3) + rng.choice([0, np.pi])
    alpha = _crack_curve(scene, rng, along_grain, rng.uniform(60, 110) * k)
    return _paint(scene.image, alpha, np.array([0.16, 0.09, 0.05]))


def _wood_stain(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    # A dried liquid: darker and more saturated inside, with a darker tide line at its edge.
    k = scene.extra["k"]
    core = _soft_blob(scene, rng, (12, 26), 1.2)
    edge = np.clip(core - ndimage.gaussian_filter(core, 2.0 * k), 0.0, 1.0) * 2.0
    return _tint(scene.image, np.clip(0.75 * core + 0.5 * edge, 0.0, 1.0), np.array([0.62, 0.52, 0.45]))


def _pill_crack(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    k = scene.extra["k"]
    alpha = _crack_curve(scene, rng, rng.uniform(0, 2 * np.pi), rng.uniform(35, 65) * k) * scene.fg
    return _paint(scene.image, alpha * 0.9, np.array([0.30, 0.28, 0.27]))


def _pill_contamination(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    k, size = scene.extra["k"], scene.image.shape[-1]
    canvas = _Canvas(size)
    base = _pick_point(rng, scene.allowed)
    canvas.polygon(_blob(rng, base, rng.uniform(3, 7) * k, 0.6))
    for _ in range(int(rng.integers(0, 4))):
        canvas.polygon(_blob(rng, base + rng.normal(0, 6 * k, 2), rng.uniform(1, 2.5) * k, 0.4))
    colour = np.array([[0.25, 0.18, 0.12], [0.20, 0.30, 0.60], [0.10, 0.10, 0.10]])[rng.integers(3)]
    return _paint(scene.image, canvas.alpha() * scene.fg * 0.95, colour)


def _pill_print(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """A faulty imprint: partly missing, or smeared sideways."""
    k, size, extra = scene.extra["k"], scene.image.shape[-1], scene.extra
    ink = extra["imprint_alpha"]
    ys, xs = np.nonzero(ink > 0.5)
    if rng.uniform() < 0.5:
        canvas = _Canvas(size)
        i = int(rng.integers(len(xs)))
        canvas.polygon(_blob(rng, np.array([xs[i], ys[i]], dtype=np.float64), rng.uniform(8, 13) * k, 0.3))
        new_ink = ink * (1.0 - canvas.alpha())
    else:
        shift = rng.uniform(2.5, 5.0) * k * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
        smear = ndimage.shift(ink, (shift[1], shift[0]), order=1)
        new_ink = np.clip(ink + 0.8 * ndimage.gaussian_filter(smear, 1.2 * k), 0.0, 0.9)
    body = _paint(extra["surface"], new_ink, extra["ink"])
    fg = scene.fg
    return extra["background"] * (1.0 - fg) + body * fg


def _nut_scratch(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    return _scratch(scene, rng, (0.95, 0.95, 0.97), (30, 70))


def _nut_missing_part(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """A chunk broken off the rim: the background shows where the metal was; the fresh break edge is bright."""
    k, size, extra = scene.extra["k"], scene.image.shape[-1], scene.extra
    corner = rng.integers(6) * np.pi / 3 + extra["angle"] + np.pi / 6 + rng.uniform(-0.35, 0.35)
    reach = extra["circum"] * rng.uniform(0.85, 1.0)
    at = np.asarray(extra["center"]) + reach * np.array([math.cos(corner), math.sin(corner)])
    canvas = _Canvas(size)
    canvas.polygon(_blob(rng, at, rng.uniform(18, 30) * k, 0.35))
    cut = canvas.alpha()
    fg = scene.fg * (1.0 - cut)
    edge = np.clip(ndimage.gaussian_filter(cut, 1.2 * k) - cut, 0.0, 1.0) * fg * 2.0
    body = extra["body"] * (1.0 + 0.25 * edge)
    return extra["background"] * (1.0 - fg) + body * fg


def _nut_stain(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    k, size = scene.extra["k"], scene.image.shape[-1]
    alpha = _soft_blob(scene, rng, (8, 16), 1.5) * (0.8 + 0.2 * _noise(rng, size, 3 * k))
    factor = np.array([[1.15, 0.70, 0.40], [0.55, 0.50, 0.40]])[rng.integers(2)]
    return _tint(scene.image, np.clip(alpha, 0.0, 1.0), factor)


_RENDERERS: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "carpet": _render_carpet,
    "wood": _render_wood,
    "pill": _render_pill,
    "nut": _render_nut,
}
_PAINTERS: dict[tuple[str, str], Callable[[_Scene, np.random.Generator], np.ndarray]] = {
    ("carpet", "contamination"): _carpet_contamination,
    ("carpet", "hole"): _carpet_hole,
    ("carpet", "stain"): _carpet_stain,
    ("wood", "crack"): _wood_crack,
    ("wood", "scratch"): _wood_scratch,
    ("wood", "stain"): _wood_stain,
    ("pill", "contamination"): _pill_contamination,
    ("pill", "crack"): _pill_crack,
    ("pill", "print"): _pill_print,
    ("nut", "missing_part"): _nut_missing_part,
    ("nut", "scratch"): _nut_scratch,
    ("nut", "stain"): _nut_stain,
}


# ---------------------------------------------------------------------------------------------------------------
# Samples.


@dataclass(frozen=True)
class SyntheticSample:
    """One generated image.

    Attributes:
        image: ``[S, S, 3]`` uint8 RGB, what is written to disk.
        mask: ``[S, S]`` bool, True on defect pixels (all False for a normal image).
        normal: ``[S, S, 3]`` uint8, the normal image the defect was painted on (equal to ``image`` for a normal
            image; equal to ``image`` wherever ``mask`` is False).
        defect: the defect type, or ``"good"``.
    """

    image: np.ndarray
    mask: np.ndarray
    normal: np.ndarray
    defect: str


def _sensor_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Pixel noise ``[3, S, S]``: triangular on {-3..3}/255 (std 1.6/255), from random bytes (cheap)."""
    b = np.frombuffer(rng.bytes(size * size * 3), dtype=np.uint8).reshape(3, size, size)
    return ((b & 3) + ((b >> 2) & 3)).astype(_F32) * (1.0 / 255.0) - (3.0 / 255.0)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """``[3, S, S]`` float in [0, 1] -> ``[S, S, 3]`` uint8."""
    return np.ascontiguousarray(np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0))


def _stream(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    # Each image has its own stream keyed by names, so changing counts or categories never changes other images.
    keys = [seed, zlib.crc32(category.encode()), zlib.crc32(split.encode()), index]
    return np.random.default_rng(keys)


def _defect_mask(moved: np.ndarray) -> np.ndarray:
    """Pixels that moved, with 1-pixel gaps closed and holes filled (computed on their bounding box)."""
    mask = np.zeros_like(moved)
    rows, cols = np.flatnonzero(moved.any(axis=1)), np.flatnonzero(moved.any(axis=0))
    if len(rows) == 0:
        return mask
    y0, y1 = max(rows[0] - 2, 0), min(rows[-1] + 3, moved.shape[0])
    x0, x1 = max(cols[0] - 2, 0), min(cols[-1] + 3, moved.shape[1])
    box = moved[y0:y1, x0:x1]
    mask[y0:y1, x0:x1] = ndimage.binary_fill_holes(ndimage.binary_closing(box) | box)
    return mask


def _check_category(category: str, where: str) -> None:
    if category not in _RENDERERS:
        raise ValueError(f"{where}: unknown synthetic category {category!r}; available: {list(SYNTHETIC_CATEGORIES)}")


def _check_seed(seed: object, where: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{where}: seed must be a non-negative int, got {seed!r}")
    return int(seed)


def render_sample(
    category: str,
    defect: str | None = None,
    *,
    seed: int = 0,
    index: int = 0,
    size: int = 256,
    split: str | None = None,
) -> SyntheticSample:
    """Generate one image of ``category`` (and, when ``defect`` is given, the defect painted on it).

    ``(seed, category, split, index)`` identify the image; ``split`` defaults to ``"test/<defect>"`` for a
    defect and ``"train/good"`` otherwise. :func:`make_dataset` writes exactly these images.

    Raises:
        ValueError: unknown category or defect type, bad seed/index/size.
    """
    where = "render_sample"
    _check_category(category, where)
    seed = _check_seed(seed, where)
    if defect is not None and defect not in DEFECT_TYPES[category]:
        raise ValueError(
            f"{where}: unknown defect {defect!r} for {category!r}; available: {list(DEFECT_TYPES[category])}"
        )
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"{where}: index must be a non-negative int, got {index!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"{where}: size must be an int >= 32, got {size!r}")
    size = int(size)
    if split is None:
        split = "train/good" if defect is None else f"test/{defect}"
    rng = _stream(seed, category, split, int(index))
    scene = _RENDERERS[category](rng, size)
    sensor = _sensor_noise(rng, size)
    normal = _to_uint8(scene.image + sensor)
    if defect is None:
        return SyntheticSample(normal, np.zeros((size, size), dtype=bool), normal, "good")

    min_area = max(12, int(20 * (size / 256.0) ** 2))
    for _ in range(_MAX_DEFECT_TRIES):
        painted = _PAINTERS[(category, defect)](scene, rng)
        mask = _defect_mask(np.abs(painted - scene.image).max(axis=0) > _MASK_THRESHOLD)
        if mask.sum() >= min_area:
            break
    else:
        raise RuntimeError(f"{where}: could not place a visible {defect!r} defect on {category!r} (seed {seed})")
    image = _to_uint8(np.where(mask, painted, scene.image) + sensor)
    # Quantisation may leave a few mask pixels unchanged; the mask stays the region the painter touched.
    return SyntheticSample(image, mask, normal, defect)


# ---------------------------------------------------------------------------------------------------------------
# The dataset on disk.


def _defect_counts(category: str, n_test_defect: int) -> dict[str, int]:
    types = DEFECT_TYPES[category]
    base, extra = divmod(n_test_defect, len(types))
    return {d: base + (1 if i < extra else 0) for i, d in enumerate(types)}


def _plan(
    seed: int, categories: Sequence[str], n_train: int, n_test_good: int, n_test_defect: int, size: int
) -> dict:
    return {
        "generator": "hetmm_fast.data.synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "categories": {
            c: {"train": n_train, "test_good": n_test_good, "test_defect": _defect_counts(c, n_test_defect)}
            for c in categories
        },
    }


def _files_present(root: Path, plan: dict) -> bool:
    """Cheap completeness check: every folder of the plan holds at least the planned number of PNG files."""
    for name, counts in plan["categories"].items():
        expected = {"train/good": counts["train"], "test/good": counts["test_good"]}
        for defect, n in counts["test_defect"].items():
            expected[f"test/{defect}"] = n
            expected[f"ground_truth/{defect}"] = n
        for sub, n in expected.items():
            folder = root / name / sub
            if n and (not folder.is_dir() or sum(1 for p in folder.iterdir() if p.suffix == ".png") < n):
                return False
    return True


def _save_png(array: np.ndarray, path: Path) -> None:
    # Huffman-only deflate: the images are noisy, so LZ matching gains little and costs most of the time.
    Image.fromarray(array).save(path, format="PNG", compress_level=1, compress_type=2)


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"make_dataset: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def make_dataset(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    categories: Sequence[str] = SYNTHETIC_CATEGORIES,
    n_train: int = 40,
    n_test_good: int = 10,
    n_test_defect: int = 15,
    size: int = 256,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write the synthetic dataset in MVTec AD layout under ``root`` and return ``root``.

    Per category: ``train/good/000.png ...`` (``n_train``), ``test/good`` (``n_test_good``), and ``n_test_defect``
    defect images spread evenly over the category's :data:`DEFECT_TYPES` (``test/<defect>/NNN.png`` with
    ``ground_truth/<defect>/NNN_mask.png``, 0/255). ``root/dataset_info.json`` records the generator version,
    seed, size and counts. Files are byte-identical for the same arguments.

    Re-running with the same arguments on a complete dataset does nothing (an interrupted run, or one with files
    missing, is redone). A folder that is not empty and holds
    a different dataset (or other files) is refused unless ``overwrite=True``, which deletes only the category
    folders being written and those named by the old info file.

    Raises:
        ValueError: bad arguments; FileExistsError: ``root`` holds something else and ``overwrite`` is False.
    """
    where = "make_dataset"
    seed = _check_seed(seed, where)
    if isinstance(categories, str):
        categories = (categories,)
    categories = tuple(categories)
    if not categories:
        raise ValueError(f"{where}: categories is empty")
    for c in categories:
        _check_category(c, where)
    if len(set(categories)) != len(categories):
        raise ValueError(f"{where}: categories has duplicates: {list(categories)}")
    n_train = _check_count(n_train, "n_train", 1)
    n_test_good = _check_count(n_test_good, "n_test_good", 0)
    n_test_defect = _check_count(n_test_defect, "n_test_defect", 0)
    size = _check_count(size, "size", 32)

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{where}: '{root}' exists and is not a folder")
    plan = _plan(seed, categories, n_train, n_test_good, n_test_defect, size)
    info_path = root / INFO_FILE
    old_info: dict | None = None
    if info_path.is_file():
        try:
            old_info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            old_info = None
    same_plan = old_info is not None and {k: old_info.get(k) for k in plan} == plan
    if same_plan and old_info.get("complete") and _files_present(root, plan) and not overwrite:
        return root
    if root.is_dir() and any(root.iterdir()) and not (overwrite or same_plan):
        what = (
            f"a dataset with seed={old_info.get('seed')}, version={old_info.get('version')}, "
            f"size={old_info.get('size')}, categories={list(old_info.get('categories', {}))}"
            if old_info is not None
            else "files that are not a synthetic dataset"
        )
        raise FileExistsError(
            f"{where}: '{root}' is not empty: it holds {what}; choose another folder or pass overwrite=True"
        )

    root.mkdir(parents=True, exist_ok=True)
    stale = set(categories) | set((old_info or {}).get("categories", {}))
    for name in sorted(stale):
        if (root / name).is_dir():
            shutil.rmtree(root / name)
    info_path.write_text(json.dumps({**plan, "complete": False}, indent=2) + "\n")

    total = len(categories) * (n_train + n_test_good + n_test_defect)
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="synthetic dataset", unit="img", disable=not progress) as bar:
        for c in categories:
            jobs: list[tuple[str, str | None, int]] = [("train/good", None, i) for i in range(n_train)]
            jobs += [("test/good", None, i) for i in range(n_test_good)]
            for defect, count in plan["categories"][c]["test_defect"].items():
                jobs += [(f"test/{defect}", defect, i) for i in range(count)]
            for split, defect, i in jobs:
                sample = render_sample(c, defect, seed=seed, index=i, size=size, split=split)
                folder = root / c / split
                folder.mkdir(parents=True, exist_ok=True)
                _save_png(sample.image, folder / f"{i:03d}.png")
                if defect is not None:
                    mask_dir = root / c / "ground_truth" / defect
                    mask_dir.mkdir(parents=True, exist_ok=True)
                    _save_png(sample.mask.astype(np.uint8) * 255, mask_dir / f"{i:03d}_mask.png")
                bar.update(1)
    info_path.write_text(json.dumps({**plan, "complete": True}, indent=2) + "\n")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hetmm_fast.data.synthetic",
        description="Write the embedded synthetic anomaly-detection dataset (MVTec AD layout).",
    )
    parser.add_argument("root", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--categories", nargs="+", default=list(SYNTHETIC_CATEGORIES), choices=SYNTHETIC_CATEGORIES)
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-test-good", type=int, default=10)
    parser.add_argument("--n-test-defect", type=int, default=15)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in ROOT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        root = make_dataset(
            args.root,
            seed=args.seed,
            categories=args.categories,
            n_train=args.n_train,
            n_test_good=args.n_test_good,
            n_test_defect=args.n_test_defect,
            size=args.size,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"dataset ready in '{root}' ({time.perf_counter() - start:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
