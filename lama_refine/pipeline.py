"""The inpainting pipeline: plain LaMa (one forward) or pyramid + partition + refiner (feature refinement)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lama_refine.models.protocol import generator_input, spec_of
from lama_refine.parts.padding import pad_symmetric
from lama_refine.parts.partition import DevicePartitioner, Partition
from lama_refine.parts.pyramid import PyramidBuilder
from lama_refine.parts.refine import NO_HOOKS, RefineHooks, Refinement, Refiner, run_refiner
from lama_refine.perf.switches import PerfConfig, step_hook, tune_partition
from lama_refine.region import CropConfig, hole_groups, inpaint_crops

REGIONS = ("whole", "crop")


def check_region(region: str) -> str:
    """`region` is one of REGIONS (ValueError naming the value otherwise)."""
    if region not in REGIONS:
        raise ValueError(f"region={region}: expected one of {', '.join(REGIONS)}")
    return region


log = logging.getLogger(__name__)


def plain_inpaint(generator: nn.Module, image: Tensor, mask: Tensor, modulo: int = 8) -> Tensor:
    """Plain LaMa: image (1, 3, H, W) in [0, 1], mask (1, 1, H, W) in {0, 1} -> (1, 3, H, W).

    As LaMa's data loader and trainer do it: symmetric padding to `modulo`, the generator's input
    as the protocol says (`models.protocol.generator_input`; LaMa's: the hole zeroed and the mask
    appended), known pixels copied from the input. Runs on the generator's device.
    """
    device = next(generator.parameters()).device
    h, w = image.shape[-2:]
    with torch.inference_mode():
        padded_image = pad_symmetric(image.to(device), modulo)
        padded_mask = pad_symmetric(mask.to(device), modulo)
        pred = generator(generator_input(generator, padded_image, padded_mask))
        inpainted = padded_mask * pred + (1 - padded_mask) * padded_image
    return inpainted[..., :h, :w].cpu()


def match_size(result: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """Bring a result computed at a smaller working size back to the input's size.

    result (1, 3, h, w), image (1, 3, H, W), mask (1, 1, H, W) -> (1, 3, H, W): bicubic
    upsampling of the result inside the hole, the input's own pixels outside it.
    """
    if result.shape[-2:] == image.shape[-2:]:
        return result
    up = F.interpolate(result, size=image.shape[-2:], mode="bicubic", align_corners=False).clamp_(0, 1)
    return mask * up + (1 - mask) * image


@dataclass
class Inpainter:
    """Everything needed to inpaint one photo, built once and reused over a folder.

    `refine=False` is plain LaMa on the whole padded image. `refine=True` builds the pyramid,
    splits the generator over `devices` and runs the refiner; with `match_input_size` the result
    is brought back to the input size when a pixel budget shrank the working image (the original
    returns the smaller image).

    `perf` tunes the rear stages (lean backward by default, see `lama_refine.perf.switches`);
    `region="crop"` inpaints a crop around each group of holes instead of the whole photo (see
    `lama_refine.region`; crops always come back at their own size, whatever `match_input_size`).

    `hooks` are passed to every `refiner.refine()` call, with `perf`'s per-step hook
    (`perf.step_hook`: glibc's `malloc_trim`) called after the hooks' own `after_step`. Building
    an Inpainter changes neither the refiner it is given nor the process: the process-wide
    settings of `perf` (threads, allocator, mmap threshold) are the entry points' job
    (`perf.apply_process_settings`, called by the CLI, `api.make_inpainter` and `lama-refine-eval`).
    """

    generator: nn.Module
    pyramid: PyramidBuilder
    refiner: Refiner
    partitioner: DevicePartitioner
    devices: Sequence[torch.device] = (torch.device("cpu"),)
    refine: bool = True
    modulo: int = 8
    match_input_size: bool = True
    perf: PerfConfig = field(default_factory=PerfConfig)
    region: str = "whole"
    crop: CropConfig = field(default_factory=CropConfig)
    hooks: RefineHooks = NO_HOOKS
    _partition: Partition | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator.eval().requires_grad_(False)
        self.devices = [torch.device(d) for d in self.devices]
        if not self.devices:
            raise ValueError("devices must name at least one device")
        check_region(self.region)

    @property
    def partition(self) -> Partition:
        if self._partition is None:
            split = self.partitioner.split(self.generator, self.devices)
            if split.spec is None:  # a partitioner of the user's that built its Partition without one
                split.spec = spec_of(self.generator)
            log.info("rear modules per device: %s", dict(zip(map(str, self.devices), split.rear_indices, strict=True)))
            self._partition = tune_partition(split, self.perf)
        return self._partition

    def refine_hooks(self) -> RefineHooks:
        """`hooks` with `perf`'s per-step hook chained after their `after_step`."""
        trim = step_hook(self.perf)
        if trim is None:
            return self.hooks
        own = self.hooks.after_step
        if own is None:
            return dataclasses.replace(self.hooks, after_step=trim)

        def both() -> None:
            own()
            trim()

        return dataclasses.replace(self.hooks, after_step=both)

    def run(self, image: Tensor, mask: Tensor) -> Refinement:
        """image (1, 3, H, W) in [0, 1], mask (1, 1, H, W) in {0, 1} -> Refinement (image on CPU).

        With `region="crop"`, `losses` lists each crop's per-scale losses in turn and `scales` is
        empty.
        """
        if image.shape[0] != 1:
            raise ValueError(f"one image at a time, got a batch of {image.shape[0]}")
        if self.region == "crop":
            return self._run_crops(image, mask)
        return self._run_whole(image, mask)

    def _run_crops(self, image: Tensor, mask: Tensor) -> Refinement:
        groups = hole_groups(mask, self.crop, self.modulo)
        log.info("region=crop: %d group(s) of holes, crops %s", len(groups), [(c.height, c.width) for _, c in groups])
        losses: list[list[float]] = []

        def inpaint(crop_image: Tensor, crop_mask: Tensor) -> Tensor:
            result = self._run_whole(crop_image, crop_mask)
            losses.extend(result.losses)
            return match_size(result.image, crop_image, crop_mask)

        return Refinement(image=inpaint_crops(inpaint, image, mask, [crop for _, crop in groups]), losses=losses)

    def _run_whole(self, image: Tensor, mask: Tensor) -> Refinement:
        if not self.refine:
            self._partition = None  # the plain path wants the whole generator on one device
            self.generator.to(self.devices[0])
            return Refinement(image=plain_inpaint(self.generator, image, mask, self.modulo))
        levels = self.pyramid.build(image, mask)
        result = run_refiner(self.refiner, self.partition, levels, self.refine_hooks())
        result.image = result.image.cpu()
        if self.match_input_size:
            result.image = match_size(result.image, image, mask)
        return result

    def __call__(self, image: Tensor, mask: Tensor) -> Tensor:
        return self.run(image, mask).image


__all__ = ["Inpainter", "check_region", "match_size", "plain_inpaint"]
