"""The Python entry points: images in, images out; or a pipeline built once and run on files.

    from PIL import Image
    from lama_refine import inpaint
    result = inpaint(Image.open("photo.jpg"), Image.open("photo_mask.png"))  # PIL in, PIL out

    from lama_refine import make_inpainter, inpaint_file
    inpainter = make_inpainter(["model.path=big-lama.pt", "pyramid_mask=nearest"])
    inpaint_file(inpainter, "photo.png", "photo_mask.png", "out.png")

Everything here composes the same Hydra config the command line uses (`conf/`), so an
override means the same thing in both places.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor, nn

from .config import build_inpainter
from .errors import UserError
from .usage import compose_checked
from .io import read_image, read_mask, to_hwc, to_uint8, write_result
from .partition import DevicePartitioner
from .perf import apply_process_settings
from .pipeline import Inpainter
from .pyramid import PyramidBuilder
from .refine import Refiner


def make_inpainter(config: DictConfig | Sequence[str] = (), generator: nn.Module | None = None, *,
                   pyramid: PyramidBuilder | None = None, refiner: Refiner | None = None,
                   partitioner: DevicePartitioner | None = None) -> Inpainter:
    """An `Inpainter` from a composed config or from command-line style overrides.

    `generator` replaces the model `model.path` names (it is not loaded then); `pyramid`,
    `refiner` and `partitioner` objects replace the configured parts, so one part can be your
    own object while the rest come from the config. `indir` and `outdir` are not needed.

    An entry point: it applies the config's process-wide `perf` settings (CPU threads, glibc's
    mmap threshold; `perf.apply_process_settings`) to this process.
    """
    cfg = config if isinstance(config, DictConfig) else compose_checked(list(config))[0]
    inpainter = build_inpainter(cfg, generator=generator)
    apply_process_settings(inpainter.perf)
    parts: dict[str, Any] = {"pyramid": pyramid, "refiner": refiner, "partitioner": partitioner}
    replaced = {k: v for k, v in parts.items() if v is not None}
    return dataclasses.replace(inpainter, **replaced) if replaced else inpainter


def inpaint_file(inpainter: Inpainter, image: str | os.PathLike, mask: str | os.PathLike,
                 out: str | os.PathLike | None = None) -> Tensor:
    """Inpaint one image file with its mask file (any non-zero grey is a hole).

    Returns the result, (1, 3, H, W) float in [0, 1] on the CPU; with `out`, also writes it
    (`.png`: 8-bit RGB with LaMa's truncation; `.npy`: float32 HxWx3).
    """
    image_t, mask_t = read_image(image), read_mask(mask)
    if image_t.shape[-2:] != mask_t.shape[-2:]:
        raise ValueError(f"{mask}: mask is {tuple(mask_t.shape[-2:])} but {image} is {tuple(image_t.shape[-2:])}")
    result = inpainter(image_t, mask_t)
    if out is not None:
        write_result(Path(out), result)
    return result


def image_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image (any mode; converted to RGB, as LaMa reads files) or an HxWx3 array -> the
    HxWx3 array the pipeline's input and the known pixels are taken from: uint8, or float in
    [0, 1] as given."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise UserError(f"image: expected an HxWx3 RGB array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1 or np.isnan(array).any()):
            raise UserError("image: a float array must hold values in [0, 1] (uint8 arrays hold 0-255)")
        return array
    raise UserError(f"image: expected uint8 or float values, got {array.dtype}")


def hole_array(mask: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL mask (grey levels, `convert('L')`) or an HxW array (bool, or numbers where non-zero
    is a hole) -> HxW bool, True in the hole (LaMa's rule: any non-zero pixel)."""
    if isinstance(mask, Image.Image):
        return np.asarray(mask.convert("L")) > 0
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise UserError(f"mask: expected an HxW array, got shape {array.shape}")
    return array.astype(bool) if array.dtype == bool else array > 0


_last_built: tuple[tuple[str, ...], Any] | None = None


def _inpainter_for(overrides: Sequence[str]):
    """The pipeline for `overrides`, kept from the previous call with the same overrides, so a
    loop over `inpaint(image, mask)` loads the model once."""
    global _last_built
    key = tuple(overrides)
    if _last_built is None or _last_built[0] != key:
        _last_built = None  # free the previous model before building the next
        _last_built = (key, make_inpainter(list(overrides)))
    return _last_built[1]


def inpaint(image: Image.Image | np.ndarray, mask: Image.Image | np.ndarray, overrides: Sequence[str] = (),
            inpainter: Inpainter | None = None) -> Image.Image | np.ndarray:
    """Inpaint one image in memory; returns the same kind as `image`, at its size.

    `image`: a PIL image (any mode, converted to RGB) or an HxWx3 array, uint8 or float in
    [0, 1]. `mask`: a PIL image or an HxW array; non-zero (or True) is the hole. Returns a PIL
    RGB image for a PIL image, uint8 HxWx3 for uint8, float32 HxWx3 for float; the known pixels
    are the input's own. `overrides` are the command line's (`["refine=false"]`,
    `["model.path=big-lama"]`); `inpainter`, from `make_inpainter(overrides)`, is used instead of
    building one (the last one built from `overrides` is reused anyway).
    """
    known, holes = image_array(image), hole_array(mask)
    if holes.shape != known.shape[:2]:
        raise UserError(f"mask is {holes.shape[0]}x{holes.shape[1]} but the image is "
                        f"{known.shape[0]}x{known.shape[1]} (height x width)")
    eight_bit = known.dtype == np.uint8
    floats = known.astype(np.float32) / 255 if eight_bit else known.astype(np.float32)
    out = floats.copy()
    if holes.any():
        pipeline = inpainter if inpainter is not None else _inpainter_for(overrides)
        image_t = torch.from_numpy(floats).permute(2, 0, 1)[None].contiguous()
        mask_t = torch.from_numpy(holes.astype(np.float32))[None, None]
        out = to_hwc(pipeline(image_t, mask_t))
    if eight_bit:
        out = to_uint8(out)
    out[~holes] = known[~holes]  # exactly the input's values, not their float round trip
    return Image.fromarray(out) if isinstance(image, Image.Image) else out


__all__ = ["hole_array", "image_array", "inpaint", "inpaint_file", "make_inpainter"]
