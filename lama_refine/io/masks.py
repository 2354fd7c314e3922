"""Mask rules: grey levels to holes (threshold, invert, resize, dilate), and a job's inputs.

A pixel is a hole where its grey level (0-255 scale) is above `threshold` (0: any non-zero
pixel, LaMa's rule).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .jobs import Job
from .read import InputError, read_mask_levels, read_picture


@dataclass(frozen=True)
class MaskRule:
    """How grey levels become holes: `level > threshold` (levels 0-255), inverted on request,
    resized to the image (nearest) on request, then grown by `dilate` pixels (a square)."""

    threshold: float = 0
    invert: bool = False
    dilate: int = 0
    resize: bool = False
    from_alpha: bool = False


def binarize(levels: np.ndarray, rule: MaskRule) -> np.ndarray:
    """Grey levels (H, W) -> bool holes."""
    holes = levels > rule.threshold
    return ~holes if rule.invert else holes


def dilate(mask: Tensor, pixels: int) -> Tensor:
    """Grow the holes of a (1, 1, H, W) {0, 1} mask by `pixels` in every direction (a square of
    side 2 * pixels + 1, as IOPaint's), done as two 1-D max-pools."""
    if pixels <= 0:
        return mask
    k = 2 * pixels + 1
    mask = F.max_pool2d(mask, (k, 1), stride=1, padding=(pixels, 0))
    return F.max_pool2d(mask, (1, k), stride=1, padding=(0, pixels))


def resize_nearest(holes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool (h, w) -> bool `size` (height, width), nearest neighbour."""
    resized = Image.fromarray(holes.astype(np.uint8) * 255).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(resized) > 0


@dataclass
class Inputs:
    """One job's decoded inputs: image (1, 3, H, W), mask (1, 1, H, W) in {0, 1}, bit depth, notes."""

    image: Tensor
    mask: Tensor
    bits: int
    notes: list[str] = field(default_factory=list)

    @property
    def hole_fraction(self) -> float:
        return float(self.mask.mean())


def load_inputs(job: Job, rule: MaskRule = MaskRule()) -> Inputs:
    """Read a job's image and mask and apply the mask rule; size mismatch is an error unless
    `rule.resize`. With the default rule the result equals read_image / read_mask."""
    picture = read_picture(job.image)
    notes = list(picture.notes)
    size = (picture.image.shape[-2], picture.image.shape[-1])
    if rule.from_alpha:
        if picture.alpha is None:
            raise InputError(f"{job.image}: has no alpha channel to take the hole from (mask.from_alpha=true)")
        levels = 255 - picture.alpha  # transparent = hole
    else:
        assert job.mask is not None, "a job has a mask file unless its holes come from the alpha channel"
        levels = read_mask_levels(job.mask)
    holes = binarize(levels, rule)
    if holes.shape != size:
        if not rule.resize:
            raise InputError(f"{job.mask}: mask is {holes.shape[0]}x{holes.shape[1]} but its image {job.image} "
                             f"is {size[0]}x{size[1]} (height x width); mask.resize=true resizes masks")
        notes.append(f"mask resized from {holes.shape[0]}x{holes.shape[1]} to {size[0]}x{size[1]}")
        holes = resize_nearest(holes, size)
    mask = dilate(torch.from_numpy(holes.astype(np.float32))[None, None], rule.dilate)
    return Inputs(picture.image, mask, picture.bits, notes)
