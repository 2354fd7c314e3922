"""Image-mask pyramids: how many scales, at what resolution (SPEC 4.2)."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from kornia.geometry.transform import resize
from torch import Tensor

from .downsample import EPS, Downsampler, MaskDownsampler


@dataclass
class Level:
    """One scale: image (1, 3, h, w) in [0, 1] and its hole mask (1, 1, h, w) in {0, 1}."""

    image: Tensor
    mask: Tensor

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[-2], self.image.shape[-1]


class PyramidBuilder(ABC):
    """Turns a photo and its mask into the scales the refiner walks through."""

    @abstractmethod
    def build(self, image: Tensor, mask: Tensor) -> list[Level]:
        """image (1, 3, H, W) in [0, 1], mask (1, 1, H, W) in {0, 1} -> levels, coarsest first.

        The last level is the working resolution: (H, W), or smaller where a pixel budget
        applies. Every level's size is the floor-half of the next one's.
        """


def fit_pixel_budget(image: Tensor, mask: Tensor, px_budget: int, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """Shrink (image, mask) to at most `px_budget` pixels, keeping the aspect ratio.

    Faithful to the original: sides are truncated (`int(h * r)`), the resize is bilinear with
    no antialiasing, and the mask is re-binarised with `> eps` (any touched pixel is a hole).
    """
    h, w = image.shape[-2:]
    if h * w <= px_budget:
        return image, mask
    ratio = math.sqrt(px_budget / float(h * w))
    size = (int(h * ratio), int(w * ratio))
    image = resize(image, size, interpolation="bilinear", align_corners=False)
    mask = resize(mask, size, interpolation="bilinear", align_corners=False)
    mask = torch.where(mask > eps, torch.ones_like(mask), mask)
    return image, mask


def count_scales(h: int, w: int, min_side: int, max_scales: int) -> int:
    """The original's scale policy: one more scale per doubling of the short side over min_side.

    Rounding the log2 puts the thresholds at about min_side * sqrt(2) (2 scales) and
    min_side * 2 * sqrt(2) (3 scales), not at min_side * 2 and * 4 as LaMa's notes say.
    """
    n = 1 + int(round(max(0.0, math.log2(min(h, w) / min_side))))
    return min(n, max_scales)


def halving_levels(image: Tensor, mask: Tensor, n_scales: int, downsampler: Downsampler,
                   mask_downsampler: MaskDownsampler) -> list[Level]:
    """`n_scales` levels, each the halving of the next finer one, returned coarsest first."""
    levels = [Level(image, mask)]
    for _ in range(n_scales - 1):
        finer = levels[-1]
        levels.append(Level(downsampler(finer.image), mask_downsampler(finer.mask)))
    return levels[::-1]


class OriginalPyramid(PyramidBuilder):
    """The original: shrink to `px_budget` pixels, then 1 + round(log2(short side / min_side))
    scales, at most `max_scales`."""

    def __init__(self, downsampler: Downsampler, mask_downsampler: MaskDownsampler, min_side: int = 512,
                 max_scales: int = 3, px_budget: int = 1_800_000):
        self.downsampler = downsampler
        self.mask_downsampler = mask_downsampler
        self.min_side = min_side
        self.max_scales = max_scales
        self.px_budget = px_budget

    def build(self, image: Tensor, mask: Tensor) -> list[Level]:
        image, mask = fit_pixel_budget(image, mask, self.px_budget)
        n_scales = count_scales(*image.shape[-2:], self.min_side, self.max_scales)
        return halving_levels(image, mask, n_scales, self.downsampler, self.mask_downsampler)


__all__ = ["Level", "OriginalPyramid", "PyramidBuilder", "count_scales", "fit_pixel_budget", "halving_levels"]
