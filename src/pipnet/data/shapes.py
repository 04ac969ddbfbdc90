"""Flat shapes drawn with PIL for the planted-parts data set: parts (filled) and distractors (outlined)."""

from __future__ import annotations

import math
from typing import Any

from PIL import ImageDraw

__all__ = ["SHAPE_NAMES", "draw_shape"]

SHAPE_NAMES = ("disc", "bullseye", "square", "bar", "cross", "triangle", "diamond", "hexagon", "star")


def _polygon(cx: float, cy: float, radii: list[float], start_deg: float) -> list[tuple[float, float]]:
    """Vertices at equal angles around (cx, cy), starting at `start_deg` (0 = up), with the given radii."""
    step = 2 * math.pi / len(radii)
    start = math.radians(start_deg - 90)
    return [(cx + r * math.cos(start + j * step), cy + r * math.sin(start + j * step)) for j, r in enumerate(radii)]


def _rotated(points: list[tuple[float, float]], cx: float, cy: float, deg: float) -> list[tuple[float, float]]:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _box(cx: float, cy: float, hw: float, hh: float) -> list[tuple[float, float]]:
    return [(cx - hw, cy - hh), (cx + hw, cy - hh), (cx + hw, cy + hh), (cx - hw, cy + hh)]


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float, fill: Any, outline: Any
) -> None:
    """Draw one shape of circumradius `r` centred on (cx, cy), turned by `angle` degrees.

    Args:
        draw: where to draw.
        shape: one of `SHAPE_NAMES`.
        cx: centre x in pixels.
        cy: centre y in pixels.
        r: circumradius in pixels.
        angle: rotation in degrees (polygons only).
        fill: fill colour; None draws the outline only, with a line width of about r / 5.
        outline: outline colour.
    """
    width = 1 if fill is not None else max(1, round(r / 5))
    if shape == "disc":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
        return
    if shape == "bullseye":  # a ring with a central dot, so that the centre lies on the part
        ring = outline if fill is None else fill
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=ring, width=max(2, round(0.3 * r)))
        dot = 0.35 * r
        draw.ellipse((cx - dot, cy - dot, cx + dot, cy + dot), fill=fill, outline=outline)
        return
    if shape == "square":
        points = _box(cx, cy, 0.8 * r, 0.8 * r)
    elif shape == "bar":
        points = _box(cx, cy, r, 0.38 * r)
    elif shape == "cross":
        a, b = r, 0.33 * r
        points = [(cx + x, cy + y) for x, y in [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a),
                                                 (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]]
    elif shape == "triangle":
        points = _polygon(cx, cy, [r] * 3, 0)
    elif shape == "diamond":
        points = _polygon(cx, cy, [r] * 4, 0)
    elif shape == "hexagon":
        points = _polygon(cx, cy, [r] * 6, 0)
    elif shape == "star":
        points = _polygon(cx, cy, [r, 0.45 * r] * 5, 0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    draw.polygon(_rotated(points, cx, cy, angle), fill=fill, outline=outline, width=width)
