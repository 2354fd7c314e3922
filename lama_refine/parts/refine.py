"""Refiners: walk the pyramid coarsest first and produce the finest scale's result."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from kornia.morphology import erosion
from torch import Tensor

from lama_refine.models.protocol import (
    Features,
    GeneratorSpec,
    feature_tensors,
    generator_input,
    known_feature_names,
    with_tensors,
)
from lama_refine.models.protocol import feature_names as protocol_feature_names
from lama_refine.parts.downsample import EPS, Downsampler, MaskDownsampler, binarize_at_least
from lama_refine.parts.padding import pad_reflect
from lama_refine.parts.partition import Partition
from lama_refine.parts.pyramid import Level

log = logging.getLogger(__name__)

# Called after every forward of the rear: (scale index, n scales, iteration, n iterations, loss or None).
ProgressCallback = Callable[[int, int, int, int, "Tensor | None"], None]


@dataclass
class Refinement:
    """A refiner's output: the final image plus what researchers and tests look at."""

    image: Tensor  # (1, 3, h, w) in [0, 1], the finest level's size
    scales: list[Tensor] = field(default_factory=list)  # each scale's result, coarsest first
    losses: list[list[float]] = field(default_factory=list)  # per scale, per iteration


@dataclass(frozen=True)
class EarlyStop:
    """Stop a scale's optimisation when the loss has not improved by a relative `tol` for
    `patience` iterations in a row (`refiner.stop.tol`, `refiner.stop.patience`).

    An iteration improves when its loss is below `(1 - tol)` times the best loss before it.
    `patience=None` is off (the original: always `n_iters` forwards); `tol=None` counts any
    decrease as an improvement. Not in the original: it trades the last iterations' small
    gains for time, and each check reads the loss on the host (one device sync per iteration).
    """

    tol: float | None = None
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.patience is None:
            if self.tol is not None:
                raise ValueError("refiner.stop.tol needs refiner.stop.patience (e.g. refiner.stop.patience=2)")
            return
        if self.patience < 1:
            raise ValueError(f"refiner.stop.patience must be >= 1, got {self.patience}")
        if self.tol is not None and not 0 <= self.tol < 1:
            raise ValueError(f"refiner.stop.tol must be in [0, 1), got {self.tol}")

    @property
    def enabled(self) -> bool:
        return self.patience is not None

    def stalled(self, losses: Sequence[float]) -> int:
        """How many iterations in a row, up to the last, did not improve on the best before them."""
        tol = self.tol or 0.0
        best, run = math.inf, 0
        for loss in losses:
            if loss < best * (1 - tol):  # a NaN loss never improves
                run = 0
            else:
                run += 1
            best = min(best, loss)
        return run

    def should_stop(self, losses: Sequence[float]) -> bool:
        """True when the scale should stop after the last of `losses` (its forward's result is kept)."""
        return self.patience is not None and self.stalled(losses) >= self.patience


def upsample_residual(
    residual: Tensor, coarse_size: tuple[int, int], fine_size: tuple[int, int], shape: torch.Size
) -> Tensor:
    """A coarse scale's feature residual (1, C, hc, wc) -> the finer scale's feature `shape`.

    Scaled by the ratio of the unpadded image sizes, so feature cells line up from the top-left
    corner as the images do; the finer scale's extra padding cells repeat the border (replicate).
    """
    sy, sx = fine_size[0] / coarse_size[0], fine_size[1] / coarse_size[1]
    size = (max(1, math.ceil(residual.shape[-2] * sy)), max(1, math.ceil(residual.shape[-1] * sx)))
    up = F.interpolate(residual, size=size, mode="bilinear", align_corners=False)[..., : shape[-2], : shape[-1]]
    pad = (0, shape[-1] - up.shape[-1], 0, shape[-2] - up.shape[-2])
    return F.pad(up, pad, mode="replicate") if any(pad) else up


@dataclass(frozen=True)
class ScaleTrace:
    """What one scale of a refinement saw and made, for `RefineHooks.on_scale` (a trace).

    Every tensor is one the refiner computed anyway (nothing is re-run), on the device it was made
    on; a receiver that keeps them copies them (`.cpu()`), since the refiner may reuse storage.
    """

    index: int  # the scale, 0 = coarsest
    n_scales: int
    image: Tensor  # (1, 3, h, w) the pyramid level's image
    mask: Tensor  # (1, 1, h, w) the pyramid level's hole mask
    result: Tensor  # (1, 3, h, w) the scale's result (the hole filled, known pixels the image's)
    losses: list[float]  # the loss of every forward optimised at this scale; empty where none was
    loss_hole: Tensor | None = None  # (1, 1, h // 2, w // 2) bool: where the coarse term compares
    # (the eroded coarse hole, or what `on_empty_loss_mask` made of it); None: no coarse term here
    target: Tensor | None = None  # (1, 3, h // 2, w // 2) the coarser scale's result, which the
    # downscaled prediction must match inside `loss_hole`; None at the coarsest scale


ScaleCallback = Callable[[ScaleTrace], object]


@dataclass(frozen=True)
class RefineHooks:
    """What the caller of `Refiner.refine` wants to hear about one run; every field is optional.

    - `progress(scale, n_scales, iteration, n_iterations, loss)`: after every forward of the rear
      (`loss` is None where nothing is optimised, e.g. the coarsest scale).
    - `after_step()`: after every optimiser step (the pipeline passes `perf.step_hook`, glibc's
      `malloc_trim`, here).
    - `on_scale(trace)`: once per scale, coarsest first, after the scale's result is made, with a
      `ScaleTrace` of the tensors the refiner used (`trace=DIR` writes them, `lama_refine.app.trace`).
      Refiners build the `ScaleTrace` only where this is set (`hooks.tracing`), so a run without a
      trace pays nothing; a refiner that does not call it leaves the trace empty.

    Frozen and passed to each `refine()` call, so one refiner object serves callers with
    different hooks and nobody rewires a refiner from outside. A new callback (e.g. a `trace` of
    per-scale images, masks and losses) is one more field defaulting to None: refiners that
    forward the object they were given keep working, and those that call it check for None.
    """

    progress: ProgressCallback | None = None
    after_step: Callable[[], object] | None = None
    on_scale: ScaleCallback | None = None

    @property
    def tracing(self) -> bool:
        """Whether `on_scale` is set: check it before building a `ScaleTrace`."""
        return self.on_scale is not None

    def scale_done(self, trace: ScaleTrace) -> None:
        if self.on_scale is not None:
            self.on_scale(trace)

    def report(self, scale: int, n_scales: int, iteration: int, n_iterations: int, loss: Tensor | None) -> None:
        if self.progress is not None:
            self.progress(scale, n_scales, iteration, n_iterations, loss)

    def stepped(self) -> None:
        if self.after_step is not None:
            self.after_step()


NO_HOOKS = RefineHooks()


class Refiner(ABC):
    """Produces the inpainted image from a split generator and an image-mask pyramid.

    Contract for subclasses: `refine(partition, levels, hooks)` takes the hooks as its third
    argument and calls them itself (`hooks.report(...)` after each forward of the rear,
    `hooks.stepped()` after each optimiser step, `hooks.scale_done(ScaleTrace(...))` once per scale
    where `hooks.tracing`) or forwards them to the refiner or helper it
    delegates to; a refiner that drops them runs silently (no progress bar, no `malloc_trim`).
    Refiners keep no per-run callbacks as attributes: the caller passes them to every call.
    """

    @abstractmethod
    def refine(self, partition: Partition, levels: Sequence[Level], hooks: RefineHooks = NO_HOOKS) -> Refinement:
        """levels: coarsest first, images (1, 3, h, w) in [0, 1], masks (1, 1, h, w) in {0, 1}.

        Returns the finest level's inpainting, (1, 3, h, w) in [0, 1], whose known pixels
        (mask 0) equal the finest level's image. `hooks` as `RefineHooks` describes.
        """


@functools.cache
def _takes_hooks(cls: type[Refiner]) -> bool:
    try:
        params = list(inspect.signature(cls.refine).parameters.values())
    except (TypeError, ValueError):  # no signature to read: assume the current contract
        return True
    return "hooks" in {p.name for p in params} or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def run_refiner(
    refiner: Refiner, partition: Partition, levels: Sequence[Level], hooks: RefineHooks = NO_HOOKS
) -> Refinement:
    """`refiner.refine(partition, levels, hooks)`, also for a refiner written against 0.1's
    `refine(partition, levels)`: that one gets the hooks as the `progress` / `after_step`
    attributes it read then, with a DeprecationWarning (supported until 0.3)."""
    if _takes_hooks(type(refiner)):
        return refiner.refine(partition, levels, hooks)
    warnings.warn(
        f"{type(refiner).__qualname__}.refine(partition, levels) has no `hooks` parameter; "
        "accept `hooks: RefineHooks` and call or forward it (docs/extending.md): the progress and "
        "after_step attributes are set for it until lama-refine 0.3",
        DeprecationWarning,
        stacklevel=2,
    )
    refiner.progress = hooks.progress  # type: ignore[attr-defined]  # the 0.1 contract, for old refiners
    refiner.after_step = hooks.after_step  # type: ignore[attr-defined]
    return refiner.refine(partition, levels)


def ellipse_kernel(size: int) -> Tensor:
    """OpenCV's `getStructuringElement(MORPH_ELLIPSE, (size, size))` as a float {0, 1} tensor.

    Re-derived from OpenCV's rule (row half-widths `round(c * sqrt(1 - dy^2 / r^2))`), so
    OpenCV is not a dependency; `tests/parts/test_refine.py` checks it against OpenCV's 15x15.
    """
    r = c = size // 2
    kernel = torch.zeros(size, size)
    for i in range(size):
        dy = i - r
        dx = round(c * math.sqrt((r * r - dy * dy) / (r * r))) if r else 0
        kernel[i, max(c - dx, 0) : min(c + dx + 1, size)] = 1
    return kernel


def feature_names(features: Features, emits: Sequence[str] = ("features",)) -> list[str]:
    """Names of `flatten_features(features)`, in order, from the generator's `front_emits`
    (`models.protocol.feature_names`; a partition's are `partition.spec.front_emits`)."""
    return protocol_feature_names(features, emits)


def flatten_features(features: Features) -> list[Tensor]:
    """The tensors among the front's output (`models.protocol.feature_tensors`)."""
    return feature_tensors(features)


def unflatten_features(template: Features, tensors: Sequence[Tensor]) -> Features:
    """Put `tensors` back into `template`'s structure (inverse of `flatten_features`)."""
    return with_tensors(template, tensors)


def spec(partition: Partition) -> GeneratorSpec:
    """The partition's generator protocol answers (the default generator's where it has none)."""
    return partition.spec if partition.spec is not None else GeneratorSpec()


def encode_level(partition: Partition, level: Level, modulo: int, eps: float = EPS) -> tuple[Tensor, Tensor, Features]:
    """Pad a level (reflect, to `modulo`) and run the front without gradients.

    Returns the padded image (1, 3, Hp, Wp) and binarised mask (1, 1, Hp, Wp), both on the front's
    device, and the front's features (a tensor, or a tuple: `models.protocol`). The generator's
    input is the protocol's (`partition.spec.make_input`).
    """
    device_in = partition.front.device
    image = pad_reflect(level.image, modulo).to(device_in)
    mask = binarize_at_least(pad_reflect(level.mask, modulo), eps).to(device_in)
    with torch.no_grad():
        features = partition.front(generator_input(spec(partition), image, mask))
    return image, mask, features


def composite(pred: Tensor, image: Tensor, mask: Tensor, size: tuple[int, int]) -> Tensor:
    """The prediction inside the hole, the image outside it, cropped to the unpadded `size`."""
    inpainted = mask * pred + (1 - mask) * image
    return inpainted[..., : size[0], : size[1]].detach()


def flat_indices(selected: Tensor) -> Tensor:
    """A bool tensor -> the (n,) int64 row-major flat indices of its True elements.

    `torch.take(x, flat_indices(m))` lists the same elements in the same order as `x[m]`, so a
    mean over either is bit-identical; computing the indices once per scale spares the device
    a host sync (boolean indexing must learn its output size) in every iteration.
    """
    return selected.reshape(-1).nonzero().squeeze(1)


@dataclass
class ScaleInputs:
    """What a refinement objective sees at one scale (all on the generator output's device).

    The bool masks are for custom objectives; the flat indices and the values they select are
    the same sets, precomputed once per scale, for sync-free gathers with `torch.take`.
    """

    image: Tensor  # (1, 3, Hp, Wp) padded image in [0, 1]
    mask: Tensor  # (1, 3, Hp, Wp) padded hole mask in {0, 1}
    known: Tensor  # (1, 3, Hp, Wp) bool, pixels compared with the image (mask < eps)
    previous: Tensor  # (1, 3, h // 2, w // 2) the coarser scale's result
    coarse_mask: Tensor  # (1, 3, h // 2, w // 2) bool, where `previous` constrains the prediction
    size: tuple[int, int]  # (h, w) unpadded size of this scale
    known_index: Tensor = field(init=False)  # (n_known,) flat indices of `known`
    known_values: Tensor = field(init=False)  # (n_known,) the image there
    coarse_index: Tensor = field(init=False)  # (n_coarse,) flat indices of `coarse_mask`
    coarse_values: Tensor = field(init=False)  # (n_coarse,) the coarser result there

    def __post_init__(self) -> None:
        self.known_index = flat_indices(self.known)
        self.known_values = torch.take(self.image, self.known_index)
        self.coarse_index = flat_indices(self.coarse_mask)
        self.coarse_values = torch.take(self.previous, self.coarse_index)


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
    which gives the same output without NaN (`on_empty_loss_mask`).

    Knobs the paper leaves open, each defaulting to the original:
    - `optimizer`: a callable `(params, lr=...) -> torch.optim.Optimizer`, e.g. a Hydra
      `_partial_` of `torch.optim.SGD`; None is Adam with torch's defaults.
    - `optimize`: which of the front's features are optimised: "both" (all of them), or one by
      the name the generator's front gives it (`register_generator(..., front_emits=)`, e.g. the
      names of LaMa's two Fourier-convolution branches, `models/kinds.py`); the others stay as the
      front computed them.
    - `known_weight`, `coarse_weight`: weights of the known-pixel and the coarse-consistency terms.
    - `erosion_size`: side of the elliptical structuring element that erodes the coarse hole.
    - `on_empty_loss_mask`: when erosion leaves no coarse hole pixel: "warn" (skip the
      coarse term, log a warning: the original's output), "ignore" (skip it silently, e.g. for
      sweeps over thin-stroke masks), "uneroded" (use the coarse hole before erosion, so thin
      holes still get a coarse-consistency term; skipped only where that is empty too).

    Less work per image, not in the original, off by default:
    - `stop`: an `EarlyStop` policy that ends a scale before `n_iters` forwards.
    - `warm_start`: each finer scale starts from its own front features plus the coarser scale's
      optimised residual (optimised minus front features), upsampled. The coarsest scale is not
      optimised, so this acts from the third scale on.
    """

    EMPTY_MASK_CHOICES = ("warn", "ignore", "uneroded")

    def __init__(
        self,
        downsampler: Downsampler,
        loss_mask_downsampler: MaskDownsampler,
        n_iters: int = 15,
        lr: float = 0.002,
        modulo: int = 8,
        erosion_size: int = 15,
        eps: float = EPS,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        optimize: str = "both",
        known_weight: float = 1.0,
        coarse_weight: float = 1.0,
        on_empty_loss_mask: str = "warn",
        stop: EarlyStop | None = None,
        warm_start: bool = False,
    ):
        if n_iters < 1:
            raise ValueError(f"n_iters must be >= 1, got {n_iters}")
        if optimize not in self.optimize_choices():
            raise ValueError(
                f"optimize must be one of {self.optimize_choices()}, got {optimize!r} (besides 'both', "
                "the names registered generators give their front's features)"
            )
        if on_empty_loss_mask not in self.EMPTY_MASK_CHOICES:
            raise ValueError(f"on_empty_loss_mask must be one of {self.EMPTY_MASK_CHOICES}, got {on_empty_loss_mask!r}")
        self.downsampler = downsampler
        self.loss_mask_downsampler = loss_mask_downsampler
        self.n_iters = n_iters
        self.lr = lr
        self.modulo = modulo
        self.erosion_size = erosion_size
        self.eps = eps
        self.optimizer = optimizer
        self.optimize = optimize
        self.known_weight = known_weight
        self.coarse_weight = coarse_weight
        self.on_empty_loss_mask = on_empty_loss_mask
        self.stop = stop if stop is not None else EarlyStop()
        self.warm_start = warm_start
        self._residual: tuple[tuple[int, int], list[Tensor | None]] | None = None

    def make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        if self.optimizer is None:
            return torch.optim.Adam(params, lr=self.lr)
        return self.optimizer(params, lr=self.lr)

    def objective(self, pred: Tensor, pred_down: Tensor, s: ScaleInputs) -> Tensor:
        """The loss to minimise; pred (1, 3, Hp, Wp), pred_down (1, 3, h // 2, w // 2).

        known_weight * mean |pred - image| over known pixels
        + coarse_weight * mean |pred_down - previous| over the coarse hole (skipped where empty).
        """
        loss = self.known_weight * torch.mean(torch.abs(torch.take(pred, s.known_index) - s.known_values))
        if s.coarse_index.numel():  # a shape, known on the host: no sync
            coarse_l1 = torch.mean(torch.abs(torch.take(pred_down, s.coarse_index) - s.coarse_values))
            loss = loss + self.coarse_weight * coarse_l1
        return loss

    def coarse_loss_mask(self, mask: Tensor, size: tuple[int, int], erode: bool = True) -> Tensor:
        """Padded mask (1, 1, Hp, Wp) -> bool (1, 3, h // 2, w // 2): holes of the coarser scale whose
        whole elliptical neighbourhood (`erosion_size`) is hole too (the image border does not
        erode); `erode=False`: the coarse holes as the loss-mask downsampler gives them."""
        h, w = size
        coarse = self.loss_mask_downsampler(mask[:, :1, :h, :w])
        if erode:
            kernel = ellipse_kernel(self.erosion_size).to(coarse)
            coarse = binarize_at_least(erosion(coarse, kernel), 1.0 - self.eps)
        return coarse.repeat(1, 3, 1, 1) >= self.eps

    @staticmethod
    def optimize_choices() -> tuple[str, ...]:
        """`optimize`'s values: "both" and every feature name a registered generator's front emits."""
        return ("both", *known_feature_names())

    def trainable(self, features: Features, names: Sequence[str] | None = None) -> list[bool]:
        """Which of `flatten_features(features)` the optimiser updates (`optimize`); `names`: theirs
        (`feature_names(features, partition.spec.front_emits)`; default: the default generator's)."""
        names = list(feature_names(features) if names is None else names)
        chosen = [self.optimize == "both" or name == self.optimize for name in names]
        if not any(chosen):
            raise ValueError(
                f"refiner.optimize={self.optimize!r} selects none of the front's features {names} "
                "(the names this generator gives them); use 'both' or one of them"
            )
        return chosen

    def refine(self, partition: Partition, levels: Sequence[Level], hooks: RefineHooks = NO_HOOKS) -> Refinement:
        result = Refinement(image=levels[-1].image)
        previous: Tensor | None = None
        self._residual = None  # warm_start: (the coarser scale's size, its optimised residuals)
        for index, level in enumerate(levels):
            previous, losses = self.refine_scale(partition, level, previous, index, len(levels), hooks)
            result.scales.append(previous)
            result.losses.append(losses)
        self._residual = None
        if previous is None:
            raise ValueError("refine() needs at least one pyramid level")
        result.image = previous
        return result

    def refine_scale(
        self,
        partition: Partition,
        level: Level,
        previous: Tensor | None,
        index: int,
        n_scales: int,
        hooks: RefineHooks = NO_HOOKS,
    ) -> tuple[Tensor, list[float]]:
        """One scale -> (its result (1, 3, h, w) cropped to the unpadded size, its loss values)."""
        size = level.size
        device_out = partition.output_device
        image, mask, features = encode_level(partition, level, self.modulo, self.eps)
        image, mask = image.to(device_out), mask.repeat(1, 3, 1, 1).to(device_out)

        if previous is None:
            # The coarsest scale has nothing to agree with: plain LaMa at this size.
            with torch.no_grad():
                pred = partition.run_rear(features)
            hooks.report(index, n_scales, 0, 1, None)
            losses: list[float] = []
            loss_hole = None
        else:
            pred, losses, loss_hole = self._optimise(
                partition, features, image, mask, previous.to(device_out), size, index, n_scales, hooks
            )
        result = composite(pred, image, mask, size)
        if hooks.tracing:
            hooks.scale_done(
                ScaleTrace(
                    index,
                    n_scales,
                    level.image,
                    level.mask,
                    result,
                    losses,
                    loss_hole=None if loss_hole is None else loss_hole[:, :1],
                    target=previous,
                )
            )
        return result, losses

    def _initial(self, features: Features, size: tuple[int, int], device: torch.device) -> list[Tensor]:
        """The optimisation's starting point: the front's features, plus with `warm_start` the
        coarser scale's optimised residual brought to this scale."""
        tensors = [t.detach().to(device) for t in flatten_features(features)]
        residual = self._residual
        if not self.warm_start or residual is None:
            return tensors
        coarse_size, residuals = residual
        return [
            t if r is None else t + upsample_residual(r.to(t), coarse_size, size, t.shape)
            for t, r in zip(tensors, residuals, strict=True)
        ]

    def _optimise(
        self,
        partition: Partition,
        features: Features,
        image: Tensor,
        mask: Tensor,
        previous: Tensor,
        size: tuple[int, int],
        index: int,
        n_scales: int,
        hooks: RefineHooks = NO_HOOKS,
    ) -> tuple[Tensor, list[float], Tensor]:
        """Optimise one scale -> (the prediction, its losses, the coarse hole the loss compared in)."""
        coarse_mask = self.coarse_loss_mask(mask, size)
        if not coarse_mask.any():
            if self.on_empty_loss_mask == "uneroded":
                coarse_mask = self.coarse_loss_mask(mask, size, erode=False)
                log.info(
                    "scale %d: the eroded loss mask is empty; using the uneroded one (%d pixels)",
                    index,
                    int(coarse_mask[:, 0].sum()),
                )
            elif self.on_empty_loss_mask == "warn":
                log.warning(
                    "scale %d: the eroded loss mask is empty (holes too thin); refining on the known "
                    "pixels only (the original reports a NaN loss here)",
                    index,
                )
        inputs = ScaleInputs(image, mask, mask < self.eps, previous, coarse_mask, size)
        rear_device = partition.rear[0].device
        # The leaves may share storage with the front's features (Adam updates them in place).
        front = [t.detach().to(rear_device).clone() for t in flatten_features(features)] if self.warm_start else []
        names = feature_names(features, spec(partition).front_emits)
        leaves = [
            t.requires_grad_(train)
            for t, train in zip(
                self._initial(features, size, rear_device), self.trainable(features, names), strict=True
            )
        ]
        optimizer = self.make_optimizer([t for t in leaves if t.requires_grad])
        losses: list[Tensor] = []
        seen: list[float] = []  # host copies, read only when early stopping is on
        for it in range(self.n_iters):
            optimizer.zero_grad()
            pred = partition.run_rear(unflatten_features(features, leaves))
            pred_down = self.downsampler(pred[..., : size[0], : size[1]])
            loss = self.objective(pred, pred_down, inputs)
            losses.append(loss.detach())
            hooks.report(index, n_scales, it, self.n_iters, losses[-1])
            if self.stop.enabled:
                seen.append(float(losses[-1]))
                if self.stop.should_stop(seen):
                    log.debug("scale %d: early stop after %d of %d iterations", index, it + 1, self.n_iters)
                    break
            if it < self.n_iters - 1:
                loss.backward()
                optimizer.step()
                hooks.stepped()
        if self.warm_start:
            self._residual = (
                size,
                [(leaf.detach() - f) if leaf.requires_grad else None for leaf, f in zip(leaves, front, strict=True)],
            )
        return pred.detach(), [float(v) for v in torch.stack(losses).cpu()], coarse_mask


class PlainRefiner(Refiner):
    """No refinement: plain LaMa through the refinement pipeline, one forward at the finest level.

    The coarsest-scale behaviour of `L1Refiner` applied to the finest level: reflect padding to
    `modulo` (where the plain path, `refine=false`, pads symmetrically; the two agree exactly
    on sizes that need no padding), the front and the rear on the partition's devices, known
    pixels copied. Coarser levels are ignored (pair it with `pyramid=fixed pyramid.n_scales=1` to
    skip building them). A baseline for sweeps: `refiner=l1,plain`.
    """

    def __init__(self, modulo: int = 8, eps: float = EPS):
        self.modulo = modulo
        self.eps = eps

    def refine(self, partition: Partition, levels: Sequence[Level], hooks: RefineHooks = NO_HOOKS) -> Refinement:
        level = levels[-1]
        image, mask, features = encode_level(partition, level, self.modulo, self.eps)
        device_out = partition.output_device
        with torch.no_grad():
            pred = partition.run_rear(features)
        hooks.report(0, 1, 0, 1, None)
        result = composite(pred, image.to(device_out), mask.repeat(1, 3, 1, 1).to(device_out), level.size)
        if hooks.tracing:
            hooks.scale_done(ScaleTrace(0, 1, level.image, level.mask, result, []))
        return Refinement(image=result, scales=[result], losses=[[]])


__all__ = [
    "EarlyStop",
    "L1Refiner",
    "NO_HOOKS",
    "PlainRefiner",
    "ProgressCallback",
    "RefineHooks",
    "Refinement",
    "Refiner",
    "ScaleCallback",
    "ScaleInputs",
    "ScaleTrace",
    "composite",
    "ellipse_kernel",
    "encode_level",
    "feature_names",
    "flatten_features",
    "run_refiner",
    "unflatten_features",
    "upsample_residual",
]
