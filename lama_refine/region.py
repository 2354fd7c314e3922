"""Refine only where the hole is (`region=crop`): IOPaint's crop strategy, adapted to refinement.

The holes are grouped (connected components whose context boxes overlap are one group); each
group is inpainted on a crop of the photo, its bounding box plus a context margin, and only the
crop's hole pixels are pasted back. A small hole in a large photo is then refined at full
resolution on a few hundred thousand pixels instead of on the whole photo shrunk to the pixel
budget. The pixel budget applies to each crop on its own (a crop larger than the budget is
shrunk like a whole photo and its result upsampled inside the hole).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Box:
    """Half-open pixel box [top, bottom) x [left, right)."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def union(self, other: Box) -> Box:
        return Box(
            min(self.top, other.top),
            min(self.left, other.left),
            max(self.bottom, other.bottom),
            max(self.right, other.right),
        )

    def overlaps(self, other: Box) -> bool:
        return (
            self.top < other.bottom and other.top < self.bottom and self.left < other.right and other.left < self.right
        )

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)


@dataclass
class CropConfig:
    """The `crop:` config section (used by `region=crop`).

    Context around a group of holes: `max(margin, margin_factor * the group's longer side)`
    pixels on every side, then the crop is grown to a multiple of `modulo` and clipped to the
    photo. `grid` is the cell size (px) of the coarse grid the components are found on.
    """

    margin: int = 128
    margin_factor: float = 1.0
    grid: int = 16

    def __post_init__(self) -> None:
        if self.margin < 0 or self.margin_factor < 0 or self.grid < 1:
            raise ValueError(f"crop: margin, margin_factor must be >= 0 and grid >= 1, got {self}")


def coarse_components(mask: Tensor, cell: int) -> list[list[tuple[int, int]]]:
    """Connected hole cells (8-connectivity) of `mask` (H, W) pooled to `cell` x `cell` cells.

    Pooling first keeps the search small on a 12 MP mask; holes closer than a cell merge, which
    the context margin (larger than a cell) would merge anyway.
    """
    pooled = F.max_pool2d(mask[None, None].float(), cell, cell, ceil_mode=True)[0, 0] > 0
    occupied = {tuple(ij) for ij in pooled.nonzero().tolist()}
    components: list[list[tuple[int, int]]] = []
    while occupied:
        seed = occupied.pop()
        queue, component = deque([seed]), [seed]
        while queue:
            i, j = queue.popleft()
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    neighbour = (i + di, j + dj)
                    if neighbour in occupied:
                        occupied.remove(neighbour)
                        queue.append(neighbour)
                        component.append(neighbour)
        components.append(component)
    return components


def exact_box(mask: Tensor, cells: list[tuple[int, int]], cell: int) -> Box:
    """The tight bounding box of the hole pixels of `mask` (H, W) inside the given cells."""
    rows = [i for i, _ in cells]
    cols = [j for _, j in cells]
    top, left = min(rows) * cell, min(cols) * cell
    bottom, right = (max(rows) + 1) * cell, (max(cols) + 1) * cell
    window = mask[top:bottom, left:right] > 0
    ys = window.any(dim=1).nonzero()
    xs = window.any(dim=0).nonzero()
    return Box(top + int(ys[0]), left + int(xs[0]), top + int(ys[-1]) + 1, left + int(xs[-1]) + 1)


def with_context(box: Box, size: tuple[int, int], cfg: CropConfig, modulo: int) -> Box:
    """`box` grown by the context margin, to a multiple of `modulo` where the photo allows,
    clipped to the photo of `size` (H, W)."""
    h, w = size
    margin = max(cfg.margin, int(round(cfg.margin_factor * max(box.height, box.width))))
    top, left = max(box.top - margin, 0), max(box.left - margin, 0)
    bottom, right = min(box.bottom + margin, h), min(box.right + margin, w)
    top, bottom = _round_span(top, bottom, h, modulo)
    left, right = _round_span(left, right, w, modulo)
    return Box(top, left, bottom, right)


def _round_span(start: int, stop: int, limit: int, modulo: int) -> tuple[int, int]:
    """Grow [start, stop) to a multiple of `modulo`: downwards/rightwards first, then the other
    way; a span that cannot fit stays clipped (the refiner pads it)."""
    extra = (-(stop - start)) % modulo
    grow_end = min(extra, limit - stop)
    stop += grow_end
    start = max(start - (extra - grow_end), 0)
    return start, stop


def hole_groups(mask: Tensor, cfg: CropConfig, modulo: int = 8) -> list[tuple[Box, Box]]:
    """mask (1, 1, H, W) or (H, W) in {0, 1} -> [(hole box, crop box)] for each group of holes.

    Components whose crop boxes overlap are merged (and their crop recomputed) until no two
    crops overlap, so crops can be inpainted independently.
    """
    mask2d = mask.reshape(mask.shape[-2:])
    size = (mask2d.shape[0], mask2d.shape[1])
    holes = [exact_box(mask2d, cells, cfg.grid) for cells in coarse_components(mask2d, cfg.grid)]
    groups = [(hole, with_context(hole, size, cfg, modulo)) for hole in holes]
    merged = True
    while merged:
        merged = False
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                if groups[a][1].overlaps(groups[b][1]):
                    hole = groups[a][0].union(groups[b][0])
                    groups[a] = (hole, with_context(hole, size, cfg, modulo))
                    del groups[b]
                    merged = True
                    break
            if merged:
                break
    return sorted(groups, key=lambda g: (g[1].top, g[1].left))


def inpaint_crops(inpaint: Callable[[Tensor, Tensor], Tensor], image: Tensor, mask: Tensor, crops: list[Box]) -> Tensor:
    """Inpaint each crop with `inpaint` (image crop, mask crop -> result crop of the same size)
    and paste its hole pixels into a copy of `image` (1, 3, H, W)."""
    out = image.clone()
    for crop in crops:
        rows, cols = crop.slices()
        crop_mask = mask[..., rows, cols]
        result = inpaint(image[..., rows, cols], crop_mask)
        out[..., rows, cols] = torch.where(crop_mask > 0, result.to(out.dtype), out[..., rows, cols])
    return out


__all__ = ["Box", "CropConfig", "coarse_components", "exact_box", "hole_groups", "inpaint_crops", "with_context"]
