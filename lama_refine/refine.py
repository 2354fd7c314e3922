"""Refiners: walk the pyramid coarsest first and produce the finest scale's result (SPEC 4.3)."""
from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from kornia.morphology import erosion
from torch import Tensor

from .downsample import EPS, Downsampler, MaskDownsampler, binarize_at_least
from .padding import pad_reflect
from .partition import Features, Partition
from .pyramid import Level

log = logging.getLogger(__name__)

# Called after every forward of the rear: (scale index, n scales, iteration, n iterations, loss or None).
ProgressCallback = Callable[[int, int, int, int, "Tensor | None"], None]


@dataclass
class Refinement:
    """A refiner's output: the final image plus what researchers and tests look at."""

    image: Tensor  # (1, 3, h, w) in [0, 1], the finest level's size
    scales: list[Tensor] = field(default_factory=list)  # each scale's result, coarsest first
    losses: list[list[float]] = field(default_factory=list)  # per scale, per iteration


class Refiner(ABC):
    """Produces the inpainted image from a split generator and an image-mask pyramid."""

    progress: ProgressCallback | None = None

    @abstractmethod
    def refine(self, partition: Partition, levels: Sequence[Level]) -> Refinement:
        """levels: coarsest first, images (1, 3, h, w) in [0, 1], masks (1, 1, h, w) in {0, 1}.

        Returns the finest level's inpainting, (1, 3, h, w) in [0, 1], whose known pixels
        (mask 0) equal the finest level's image.
        """


def ellipse_kernel(size: int) -> Tensor:
    """OpenCV's `getStructuringElement(MORPH_ELLIPSE, (size, size))` as a float {0, 1} tensor.

    Re-derived from OpenCV's rule (row half-widths `round(c * sqrt(1 - dy^2 / r^2))`), so
    OpenCV is not a dependency; `tests/test_refine.py` checks it against OpenCV's 15x15.
    """
    r = c = size // 2
    kernel = torch.zeros(size, size)
    for i in range(size):
        dy = i - r
        dx = round(c * math.sqrt((r * r - dy * dy) / (r * r))) if r else 0
        kernel[i, max(c - dx, 0): min(c + dx + 1, size)] = 1
    return kernel


def flatten_features(features: Features) -> list[Tensor]:
    """The tensors among the front's output (a tensor, or a tuple for FFC's (local, global))."""
    if isinstance(features, tuple):
        return [f for f in features if torch.is_tensor(f)]
    return [features]


def unflatten_features(template: Features, tensors: Sequence[Tensor]) -> Features:
    """Put `tensors` back into `template`'s structure (inverse of `flatten_features`)."""
    if not isinstance(template, tuple):
        return tensors[0]
    it = iter(tensors)
    return tuple(next(it) if torch.is_tensor(f) else f for f in template)


@dataclass
class ScaleInputs:
    """What a refinement objective sees at one scale (all on the generator output's device)."""

    image: Tensor  # (1, 3, Hp, Wp) padded image in [0, 1]
    mask: Tensor  # (1, 3, Hp, Wp) padded hole mask in {0, 1}
    known: Tensor  # (1, 3, Hp, Wp) bool, pixels compared with the image (mask < eps)
    previous: Tensor  # (1, 3, h // 2, w // 2) the coarser scale's result
    coarse_mask: Tensor  # (1, 3, h // 2, w // 2) bool, where `previous` constrains the prediction
    size: tuple[int, int]  # (h, w) unpadded size of this scale


class L1Refiner(Refiner):
    """The original feature refinement (Kulshreshtha et al. 2022).

    Per scale, the front's features become the optimised variable; Adam runs `n_iters`
    forwards of the rear and `n_iters - 1` steps on the L1 loss to the known pixels plus the L1
    loss between the downscaled prediction and the coarser result inside the (eroded,
    all-pixels-downscaled) hole. The coarsest scale is one plain forward.

    Faithful quirks kept: each scale is reflect-padded (the plain path pads symmetrically);
    the loss mask threshold `>= 1 - 1e-8` is `== 1` in float32. When erosion leaves no coarse
    hole pixel the original's loss is NaN (mean of nothing) while its gradient, and so the
    output, come from the known-pixel term alone; here that term is skipped and a warning logged,
    which gives the same output without NaN.
    """

    def __init__(self, downsampler: Downsampler, loss_mask_downsampler: MaskDownsampler, n_iters: int = 15,
                 lr: float = 0.002, modulo: int = 8, erosion_size: int = 15, eps: float = EPS):
        if n_iters < 1:
            raise ValueError(f"n_iters must be >= 1, got {n_iters}")
        self.downsampler = downsampler
        self.loss_mask_downsampler = loss_mask_downsampler
        self.n_iters = n_iters
        self.lr = lr
        self.modulo = modulo
        self.erosion_size = erosion_size
        self.eps = eps

    def make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr)

    def objective(self, pred: Tensor, pred_down: Tensor, s: ScaleInputs) -> Tensor:
        """The loss to minimise; pred (1, 3, Hp, Wp), pred_down (1, 3, h // 2, w // 2)."""
        loss = torch.mean(torch.abs(pred[s.known] - s.image[s.known]))
        if s.coarse_mask.any():
            loss = loss + torch.mean(torch.abs(pred_down[s.coarse_mask] - s.previous[s.coarse_mask]))
        return loss

    def coarse_loss_mask(self, mask: Tensor, size: tuple[int, int]) -> Tensor:
        """Padded mask (1, 1, Hp, Wp) -> bool (1, 3, h // 2, w // 2): holes of the coarser scale whose
        whole 15x15 elliptical neighbourhood is hole too (the image border does not erode)."""
        h, w = size
        coarse = self.loss_mask_downsampler(mask[:, :1, :h, :w])
        kernel = ellipse_kernel(self.erosion_size).to(coarse)
        coarse = binarize_at_least(erosion(coarse, kernel), 1.0 - self.eps)
        return coarse.repeat(1, 3, 1, 1) >= self.eps

    def refine(self, partition: Partition, levels: Sequence[Level]) -> Refinement:
        result = Refinement(image=levels[-1].image)
        previous: Tensor | None = None
        for index, level in enumerate(levels):
            previous, losses = self.refine_scale(partition, level, previous, index, len(levels))
            result.scales.append(previous)
            result.losses.append(losses)
        result.image = previous
        return result

    def refine_scale(self, partition: Partition, level: Level, previous: Tensor | None, index: int,
                     n_scales: int) -> tuple[Tensor, list[float]]:
        """One scale -> (its result (1, 3, h, w) cropped to the unpadded size, its loss values)."""
        size = level.size
        device_in, device_out = partition.front.device, partition.output_device
        image = pad_reflect(level.image, self.modulo).to(device_in)
        mask = binarize_at_least(pad_reflect(level.mask, self.modulo), self.eps).to(device_in)
        with torch.no_grad():
            features = partition.front(torch.cat([image * (1 - mask), mask], dim=1))
        image, mask = image.to(device_out), mask.repeat(1, 3, 1, 1).to(device_out)

        if previous is None:
            # The coarsest scale has nothing to agree with: plain LaMa at this size.
            with torch.no_grad():
                pred = partition.run_rear(features)
            self._report(index, n_scales, 0, 1, None)
            losses: list[float] = []
        else:
            pred, losses = self._optimise(partition, features, image, mask, previous.to(device_out), size,
                                          index, n_scales)
        inpainted = mask * pred + (1 - mask) * image
        return inpainted[..., : size[0], : size[1]].detach(), losses

    def _optimise(self, partition: Partition, features: Features, image: Tensor, mask: Tensor, previous: Tensor,
                  size: tuple[int, int], index: int, n_scales: int) -> tuple[Tensor, list[float]]:
        coarse_mask = self.coarse_loss_mask(mask, size)
        if not coarse_mask.any():
            log.warning("scale %d: the eroded loss mask is empty (holes too thin); refining on the known "
                        "pixels only (the original reports a NaN loss here)", index)
        inputs = ScaleInputs(image, mask, mask < self.eps, previous, coarse_mask, size)
        leaves = [t.detach().to(partition.rear[0].device).requires_grad_(True) for t in flatten_features(features)]
        optimizer = self.make_optimizer(leaves)
        losses: list[Tensor] = []
        for it in range(self.n_iters):
            optimizer.zero_grad()
            pred = partition.run_rear(unflatten_features(features, leaves))
            pred_down = self.downsampler(pred[..., : size[0], : size[1]])
            loss = self.objective(pred, pred_down, inputs)
            losses.append(loss.detach())
            self._report(index, n_scales, it, self.n_iters, losses[-1])
            if it < self.n_iters - 1:
                loss.backward()
                optimizer.step()
        return pred.detach(), [float(v) for v in torch.stack(losses).cpu()]

    def _report(self, index: int, n_scales: int, it: int, n_iters: int, loss: Tensor | None) -> None:
        if self.progress is not None:
            self.progress(index, n_scales, it, n_iters, loss)


__all__ = [
    "L1Refiner",
    "ProgressCallback",
    "Refinement",
    "Refiner",
    "ScaleInputs",
    "ellipse_kernel",
    "flatten_features",
    "unflatten_features",
]
