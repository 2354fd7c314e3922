"""Mask rules: grey levels to holes (threshold, invert, resize, dilate), and a job's inputs.

A pixel is a hole where its grey level (0-255 scale) is above `threshold` (0: any non-zero
pixel, LaMa's rule); in a lossy (JPEG, lossy WEBP) mask also above `lossy_threshold` (127), so
compression noise around the hole is no hole. A hole over `max_hole` of the photo (half) is
refused: it is most often an inverted mask (hole black), which would return a smear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lama_refine.io.jobs import Job
from lama_refine.io.read import InputError, is_lossy, read_mask_levels, read_picture


@dataclass(frozen=True)
class MaskRule:
    """How grey levels become holes: `level > threshold` (levels 0-255), inverted on request,
    resized to the image (nearest) on request, then grown by `dilate` pixels (a square)."""

    threshold: float = 0
    invert: bool = False
    dilate: int = 0
    resize: bool = False
    from_alpha: bool = False
    max_hole: float = 0.5  # a larger hole fraction fails the file (hole_problem)
    lossy_threshold: float = 127  # JPEG masks: their compression noise stays below mid-grey

    @classmethod
    def from_config(cls, section: Any) -> MaskRule:
        """The config's `mask:` section (defaults where a config predates a key)."""
        m = section or {}
        return cls(
            threshold=float(m.get("threshold", 0)),
            invert=bool(m.get("invert", False)),
            dilate=int(m.get("dilate", 0)),
            resize=bool(m.get("resize", False)),
            from_alpha=bool(m.get("from_alpha", False)),
            max_hole=float(m.get("max_hole", 0.5)),
            lossy_threshold=float(m.get("lossy_threshold", 127)),
        )


def binarize(levels: np.ndarray, rule: MaskRule, lossy: bool = False) -> np.ndarray:
    """Grey levels (H, W) -> bool holes; `lossy`: a JPEG mask's levels, held to `lossy_threshold` too."""
    holes = levels > (max(rule.threshold, rule.lossy_threshold) if lossy else rule.threshold)
    return ~holes if rule.invert else holes


def hole_problem(fraction: float, rule: MaskRule) -> str | None:
    """Why a hole this large (a fraction of the photo) is refused, or None. An inverted mask (hole
    black, as other tools draw it) is the most common mask mistake and gives a smear, not an error."""
    if fraction <= rule.max_hole:
        return None
    return (
        f"the hole covers {fraction:.1%} of the photo, more than mask.max_hole={rule.max_hole:g}: is the mask "
        f"inverted (hole black)? mask.invert=true inverts it; mask.max_hole=1.0 accepts holes this large"
    )


def lossy_note(rule: MaskRule) -> str:
    if rule.lossy_threshold <= rule.threshold:
        return "lossy (JPEG) mask: its compression noise around the hole counts as hole; save masks as PNG"
    return (
        f"lossy (JPEG) mask: grey levels up to {rule.lossy_threshold:g} are taken for compression noise, not "
        "holes (mask.lossy_threshold); save masks as PNG to keep every level"
    )


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
        lossy = False
    else:
        assert job.mask is not None, "a job has a mask file unless its holes come from the alpha channel"
        levels = read_mask_levels(job.mask)
        lossy = is_lossy(job.mask)
        if lossy:
            notes.append(lossy_note(rule))
    holes = binarize(levels, rule, lossy)
    if holes.shape != size:
        if not rule.resize:
            raise InputError(
                f"{job.mask}: mask is {holes.shape[0]}x{holes.shape[1]} but its image {job.image} "
                f"is {size[0]}x{size[1]} (height x width); mask.resize=true resizes masks"
            )
        notes.append(f"mask resized from {holes.shape[0]}x{holes.shape[1]} to {size[0]}x{size[1]}")
        holes = resize_nearest(holes, size)
    mask = dilate(torch.from_numpy(holes.astype(np.float32))[None, None], rule.dilate)
    problem = hole_problem(float(mask.mean()), rule)
    if problem:
        raise InputError(f"{job.name}: {problem}")
    return Inputs(picture.image, mask, picture.bits, notes)
