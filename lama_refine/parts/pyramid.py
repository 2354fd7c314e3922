"""Image-mask pyramids: how many scales, at what resolution."""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from kornia.geometry.transform import resize
from torch import Tensor

from lama_refine.parts.downsample import EPS, Downsampler, MaskDownsampler


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

    def pixel_budget(self) -> int | None:
        """The most pixels the finest level may have, or None where this pyramid has no budget.
        The out-of-memory retry halves it (`with_pixel_budget`); None means no such retry."""
        return None

    def with_pixel_budget(self, px_budget: int) -> PyramidBuilder:
        """A pyramid like this one whose finest level has at most `px_budget` pixels. Override
        it together with `pixel_budget`."""
        raise NotImplementedError(f"{type(self).__name__} declares no pixel budget to change")


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


def halving_levels(
    image: Tensor, mask: Tensor, n_scales: int, downsampler: Downsampler, mask_downsampler: MaskDownsampler
) -> list[Level]:
    """`n_scales` levels, each the halving of the next finer one, returned coarsest first."""
    levels = [Level(image, mask)]
    for _ in range(n_scales - 1):
        finer = levels[-1]
        levels.append(Level(downsampler(finer.image), mask_downsampler(finer.mask)))
    return levels[::-1]


def halvings_to_target(short_side: int, target: int) -> int:
    """How many floor-halvings bring `short_side` nearest to `target`, nearest as a ratio
    (|log2(side / target)|; ties go to fewer halvings, i.e. the larger coarsest scale)."""
    if short_side < 1 or target < 1:
        raise ValueError(f"sides must be positive, got short side {short_side}, target {target}")
    best, best_distance, k, side = 0, math.inf, 0, short_side
    while side >= 1:
        distance = abs(math.log2(side / target))
        if distance < best_distance:
            best, best_distance = k, distance
        k, side = k + 1, side // 2
    return best


class HalvingPyramid(PyramidBuilder):
    """Shared skeleton of the builders here: shrink to a pixel budget (None: never resize), then
    `scale_count(h, w)` levels, each the halving of the next. Subclasses decide the count."""

    def __init__(self, downsampler: Downsampler, mask_downsampler: MaskDownsampler, px_budget: int | None = 1_800_000):
        self.downsampler = downsampler
        self.mask_downsampler = mask_downsampler
        self.px_budget = px_budget

    def pixel_budget(self) -> int | None:
        return self.px_budget

    def with_pixel_budget(self, px_budget: int) -> HalvingPyramid:
        changed = copy.copy(self)
        changed.px_budget = px_budget
        return changed

    @abstractmethod
    def scale_count(self, h: int, w: int) -> int:
        """Number of levels (>= 1) for a working image of h x w pixels."""

    def build(self, image: Tensor, mask: Tensor) -> list[Level]:
        if self.px_budget is not None:
            image, mask = fit_pixel_budget(image, mask, self.px_budget)
        n_scales = self.scale_count(*image.shape[-2:])
        return halving_levels(image, mask, n_scales, self.downsampler, self.mask_downsampler)


class OriginalPyramid(HalvingPyramid):
    """The original: shrink to `px_budget` pixels, then 1 + round(log2(short side / min_side))
    scales, at most `max_scales`."""

    def __init__(
        self,
        downsampler: Downsampler,
        mask_downsampler: MaskDownsampler,
        min_side: int = 512,
        max_scales: int = 3,
        px_budget: int | None = 1_800_000,
    ):
        super().__init__(downsampler, mask_downsampler, px_budget)
        self.min_side = min_side
        self.max_scales = max_scales

    def scale_count(self, h: int, w: int) -> int:
        return count_scales(h, w, self.min_side, self.max_scales)


class FullResolutionPyramid(OriginalPyramid):
    """The original scale policy with no pixel budget: the finest level is the input itself,
    never resized, whatever its size (memory grows with it)."""

    def __init__(
        self, downsampler: Downsampler, mask_downsampler: MaskDownsampler, min_side: int = 512, max_scales: int = 3
    ):
        super().__init__(downsampler, mask_downsampler, min_side, max_scales, px_budget=None)


class FixedPyramid(HalvingPyramid):
    """Exactly `n_scales` levels whatever the image size (after the pixel budget)."""

    def __init__(
        self,
        downsampler: Downsampler,
        mask_downsampler: MaskDownsampler,
        n_scales: int = 2,
        px_budget: int | None = 1_800_000,
    ):
        if n_scales < 1:
            raise ValueError(f"n_scales must be >= 1, got {n_scales}")
        super().__init__(downsampler, mask_downsampler, px_budget)
        self.n_scales = n_scales

    def scale_count(self, h: int, w: int) -> int:
        if min(h, w) >> (self.n_scales - 1) < 1:
            raise ValueError(
                f"{self.n_scales} scales need a short side of at least {2 ** (self.n_scales - 1)} pixels, got {h}x{w}"
            )
        return self.n_scales


class TrainResolutionPyramid(HalvingPyramid):
    """As many halvings as bring the coarsest short side nearest (as a ratio) to the resolution
    the model was trained at (256 for big-lama), so the coarsest pass is LaMa at its home size.
    `max_scales` (None: no cap) bounds the count."""

    def __init__(
        self,
        downsampler: Downsampler,
        mask_downsampler: MaskDownsampler,
        train_resolution: int = 256,
        max_scales: int | None = None,
        px_budget: int | None = 1_800_000,
    ):
        super().__init__(downsampler, mask_downsampler, px_budget)
        self.train_resolution = train_resolution
        self.max_scales = max_scales

    def scale_count(self, h: int, w: int) -> int:
        n = 1 + halvings_to_target(min(h, w), self.train_resolution)
        return n if self.max_scales is None else min(n, self.max_scales)


__all__ = [
    "FixedPyramid",
    "FullResolutionPyramid",
    "HalvingPyramid",
    "Level",
    "OriginalPyramid",
    "PyramidBuilder",
    "TrainResolutionPyramid",
    "count_scales",
    "fit_pixel_budget",
    "halving_levels",
    "halvings_to_target",
]
