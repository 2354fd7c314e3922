"""LaMa-style random hole masks (LaMa's thin / medium / thick training families), seeded and relative to the image size.

The training loop draws its holes here, and the evaluation reuses the same function with fixed
seeds, so the numbers in the model card and the masks the network learned from come from one
definition. The published families are specified at 512 px; every length and width is scaled
by `min(h, w) / 512`, so a 256 px training crop gets half-size strokes and a 2 K px photo gets
holes of the same *relative* size as LaMa's 512 px evaluation masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

REFERENCE_SIDE = 512
MAX_COVERAGE = 0.5  # LaMa's `max_tamper_area`: masks covering more are redrawn
MAX_REDRAWS = 100


@dataclass(frozen=True)
class StrokeParams:
    """Irregular strokes: `times` strokes of 1-5 connected segments (sizes at 512 px)."""

    min_times: int
    max_times: int
    max_width: int
    max_len: int
    max_angle: int = 4


@dataclass(frozen=True)
class BoxParams:
    """Axis-aligned boxes: `times` boxes with sides in [min_size, max_size) (sizes at 512 px)."""

    min_times: int
    max_times: int
    min_size: int
    max_size: int
    margin: int


@dataclass(frozen=True)
class MaskFamily:
    """One family: strokes, or (with probability box_proba / (1 + box_proba)) boxes instead."""

    strokes: StrokeParams
    boxes: BoxParams | None = None
    box_proba: float = 0.0


FAMILIES: dict[str, MaskFamily] = {
    "thin": MaskFamily(StrokeParams(4, 70, 20, 100)),
    "medium": MaskFamily(StrokeParams(4, 10, 100, 200), BoxParams(1, 5, 30, 150, 0), 0.3),
    "thick": MaskFamily(StrokeParams(1, 5, 250, 450), BoxParams(1, 4, 30, 300, 10), 0.3),
}


def _scaled(value: float, scale: float) -> int:
    return max(1, int(round(value * scale)))


def draw_strokes(h: int, w: int, params: StrokeParams, rng: np.random.Generator) -> np.ndarray:
    """Irregular brush strokes as LaMa's training masks draw them, (h, w) float32 in {0, 1}.

    Each stroke starts at a random pixel and walks 1-5 segments; the angle set is small
    (0.01 + {0..max_angle-1} radians, mirrored on even strokes), which gives LaMa's
    characteristic zig-zag scribbles. Segments are thick lines with round joints.
    """
    scale = min(h, w) / REFERENCE_SIDE
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    times = int(rng.integers(params.min_times, params.max_times + 1))
    for stroke in range(times):
        x, y = float(rng.integers(w)), float(rng.integers(h))
        for _ in range(1 + int(rng.integers(5))):
            angle = 0.01 + int(rng.integers(params.max_angle))
            if stroke % 2 == 0:
                angle = 2 * math.pi - angle
            length = (10 + int(rng.integers(params.max_len))) * scale
            width = _scaled(5 + int(rng.integers(params.max_width)), scale)
            end_x = float(np.clip(x + length * math.sin(angle), 0, w))
            end_y = float(np.clip(y + length * math.cos(angle), 0, h))
            draw.line([(x, y), (end_x, end_y)], fill=255, width=width)
            radius = width / 2
            for cx, cy in ((x, y), (end_x, end_y)):  # round joints, no gaps between segments
                draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
            x, y = end_x, end_y
    return (np.asarray(canvas) > 0).astype(np.float32)


def draw_boxes(h: int, w: int, params: BoxParams, rng: np.random.Generator) -> np.ndarray:
    """Random rectangles at least `margin` from the border, (h, w) float32 in {0, 1}."""
    scale = min(h, w) / REFERENCE_SIDE
    margin = int(params.margin * scale)
    lo, hi = _scaled(params.min_size, scale), _scaled(params.max_size, scale)
    mask = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(params.min_times, params.max_times + 1))):
        box_h = int(rng.integers(lo, max(lo + 1, min(hi, h - 2 * margin))))
        box_w = int(rng.integers(lo, max(lo + 1, min(hi, w - 2 * margin))))
        top = int(rng.integers(margin, max(margin + 1, h - margin - box_h + 1)))
        left = int(rng.integers(margin, max(margin + 1, w - margin - box_w + 1)))
        mask[top : top + box_h, left : left + box_w] = 1
    return mask


def draw_family(h: int, w: int, family: MaskFamily, rng: np.random.Generator) -> np.ndarray:
    """One mask of a family (strokes or boxes), before the coverage check."""
    if family.boxes is not None and rng.random() < family.box_proba / (1 + family.box_proba):
        return draw_boxes(h, w, family.boxes, rng)
    return draw_strokes(h, w, family.strokes, rng)


def random_mask(
    h: int, w: int, family: str, rng: np.random.Generator, max_coverage: float = MAX_COVERAGE
) -> np.ndarray:
    """A (h, w) float32 {0, 1} hole mask of `family` ("thin", "medium", "thick").

    Empty masks and masks covering more than `max_coverage` are redrawn (LaMa's tamper-area
    rule), so every mask has a hole and leaves most of the image as context.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown mask family {family!r}; expected one of {sorted(FAMILIES)}")
    mask = np.zeros((h, w), np.float32)
    for _ in range(MAX_REDRAWS):
        mask = draw_family(h, w, FAMILIES[family], rng)
        if 0 < mask.mean() <= max_coverage:
            return mask
    return mask


def seeded_mask(h: int, w: int, family: str, seed: int) -> np.ndarray:
    """`random_mask` from its own seed: the same (h, w, family, seed) always gives the same mask."""
    return random_mask(h, w, family, np.random.default_rng(seed))


def mixed_mask(h: int, w: int, rng: np.random.Generator, weights: dict[str, float] | None = None) -> np.ndarray:
    """A mask of a family drawn with `weights` (default: equal): the training mixture."""
    weights = weights or {name: 1.0 for name in FAMILIES}
    names = sorted(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    family = names[int(rng.choice(len(names), p=p / p.sum()))]
    return random_mask(h, w, family, rng)


__all__ = [
    "FAMILIES",
    "BoxParams",
    "MaskFamily",
    "StrokeParams",
    "draw_boxes",
    "draw_strokes",
    "mixed_mask",
    "random_mask",
    "seeded_mask",
]
