"""Halving an image or a mask: the pyramid's and the loss's downsamplers.

Functional ops first, thin `nn.Module` parts around them (kornia's split), so a researcher can
use an op directly or swap a part by config (`downsampler=...`, `pyramid_mask=...`,
`loss_mask=...`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from torch import Tensor, nn

EPS = 1e-8


def half_size(x: Tensor) -> tuple[int, int]:
    """(..., H, W) -> (H // 2, W // 2): the pyramid floors odd sides."""
    return x.shape[-2] // 2, x.shape[-1] // 2


def bilinear_half(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H // 2, W // 2), bilinear, align_corners False, no antialias."""
    return F.interpolate(x, size=half_size(x), mode="bilinear", align_corners=False)


def area_half(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H // 2, W // 2), each output pixel the mean of the input pixels
    under it (torch's `area` mode: adaptive average pooling; odd sides give 2- or 3-pixel
    windows, so every input pixel counts)."""
    return F.interpolate(x, size=half_size(x), mode="area")


def antialiased_bilinear_half(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H // 2, W // 2), bilinear with torch's antialias (a triangle filter
    widened to the downscale factor, as PIL resizes), align_corners False."""
    return F.interpolate(x, size=half_size(x), mode="bilinear", align_corners=False, antialias=True)


def gaussian_pyr_down(x: Tensor, kernel_size: int = 5, sigma: float = 1.0) -> Tensor:
    """Gaussian blur (reflect border) then bilinear halving: the original's `_pyrdown`."""
    blurred = gaussian_blur2d(x, (kernel_size, kernel_size), (sigma, sigma))
    return bilinear_half(blurred)


def binarize_at_least(x: Tensor, threshold: float) -> Tensor:
    """1 where `x >= threshold`, else 0, in x's dtype."""
    return (x >= threshold).to(x.dtype)


class Downsampler(nn.Module, ABC):
    """Halves an image batch."""

    @abstractmethod
    def forward(self, image: Tensor) -> Tensor:
        """(B, C, H, W) float in [0, 1] -> (B, C, H // 2, W // 2) float in [0, 1].

        Must be differentiable: the refiner backpropagates through it.
        """


class GaussianDownsampler(Downsampler):
    """5x5 Gaussian (sigma 1, reflect border) then bilinear halving; the original's default."""

    def __init__(self, kernel_size: int = 5, sigma: float = 1.0):
        super().__init__()
        self.kernel_size = kernel_size
        self.sigma = sigma

    def forward(self, image: Tensor) -> Tensor:
        return gaussian_pyr_down(image, self.kernel_size, self.sigma)


class AreaDownsampler(Downsampler):
    """Box filter: each coarse pixel is the mean of the fine pixels under it. No blur beyond the
    pixel's own footprint, so edges stay sharper than with the Gaussian."""

    def forward(self, image: Tensor) -> Tensor:
        return area_half(image)


class AntialiasedBilinearDownsampler(Downsampler):
    """Bilinear halving with torch's antialias filter (what PIL and torchvision's
    `resize(antialias=True)` do): no separate blur, no aliasing."""

    def forward(self, image: Tensor) -> Tensor:
        return antialiased_bilinear_half(image)


class MaskDownsampler(nn.Module, ABC):
    """Halves a binary hole mask (1 = hole)."""

    @abstractmethod
    def forward(self, mask: Tensor) -> Tensor:
        """(B, 1, H, W) float in {0, 1} -> (B, 1, H // 2, W // 2) float in {0, 1}."""


class BlurMaskDownsampler(MaskDownsampler):
    """Any-pixel rule: a coarse pixel is a hole if any hole pixel lies near it.

    Blur + bilinear halving, then `>= eps` -> 1. Holes grow a little at each coarser scale, so
    thin strokes survive. The original's pyramid mask downsampler (`blur_mask=True`).
    """

    def __init__(self, kernel_size: int = 5, sigma: float = 1.0, eps: float = EPS):
        super().__init__()
        self.kernel_size = kernel_size
        self.sigma = sigma
        self.eps = eps

    def forward(self, mask: Tensor) -> Tensor:
        return binarize_at_least(gaussian_pyr_down(mask, self.kernel_size, self.sigma), self.eps)


class AllPixelsMaskDownsampler(MaskDownsampler):
    """All-pixels rule: a coarse pixel is a hole only if the pixels under it all are.

    Bilinear halving (no blur), then `>= 1 - eps` -> 1. Holes shrink; strokes thinner than two
    pixels vanish. The original's loss mask downsampler (`blur_mask=False`).

    Faithful quirk: in float32 `1 - 1e-8 == 1.0`, so the threshold is really `== 1`, and a
    bilinear weight sum that rounds to 0.99999994 inside an all-hole region drops that pixel
    ("pinholes", which the refiner's erosion then widens). Kept on purpose: the defaults must
    reproduce the original's numbers.
    """

    def __init__(self, eps: float = EPS):
        super().__init__()
        self.eps = eps

    def forward(self, mask: Tensor) -> Tensor:
        return binarize_at_least(bilinear_half(mask), 1.0 - self.eps)


class TolerantAllPixelsMaskDownsampler(AllPixelsMaskDownsampler):
    """The all-pixels rule without the float32 pinholes: `>= 1 - tolerance` with a tolerance
    (default 1e-5) far above float32 rounding of a bilinear weight sum (a few 1e-8) and far
    below any real partial coverage, so an all-hole neighbourhood stays a hole while a coarse
    pixel that sees a known pixel (weight >= 1e-5) does not.
    """

    def __init__(self, tolerance: float = 1e-5):
        super().__init__(eps=tolerance)


class AreaMaskDownsampler(MaskDownsampler):
    """Coverage rule: a coarse pixel is a hole when at least `threshold` of the fine pixels under
    it are (area average, `>= threshold`). 0.5 is a majority vote; a threshold near 0 behaves
    like the any-pixel rule without blur, 1 like the all-pixels rule (exactly: an area mean of
    ones is 1 in float32, so no pinholes)."""

    def __init__(self, threshold: float = 0.5):
        super().__init__()
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold

    def forward(self, mask: Tensor) -> Tensor:
        return binarize_at_least(area_half(mask), self.threshold)


class NearestMaskDownsampler(MaskDownsampler):
    """True nearest-neighbour pick: each coarse pixel copies the fine pixel nearest its centre."""

    def forward(self, mask: Tensor) -> Tensor:
        return F.interpolate(mask, size=half_size(mask), mode="nearest-exact")


__all__ = [
    "AllPixelsMaskDownsampler",
    "AntialiasedBilinearDownsampler",
    "AreaDownsampler",
    "AreaMaskDownsampler",
    "BlurMaskDownsampler",
    "Downsampler",
    "EPS",
    "GaussianDownsampler",
    "MaskDownsampler",
    "NearestMaskDownsampler",
    "TolerantAllPixelsMaskDownsampler",
    "antialiased_bilinear_half",
    "area_half",
    "bilinear_half",
    "binarize_at_least",
    "gaussian_pyr_down",
    "half_size",
]
