"""The Python entry points researchers script against: build a pipeline, run it on files.

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
from typing import Sequence

from omegaconf import DictConfig
from torch import Tensor, nn

from .config import build_inpainter, compose
from .io import read_image, read_mask, write_result
from .partition import DevicePartitioner
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
    """
    cfg = config if isinstance(config, DictConfig) else compose(list(config))
    inpainter = build_inpainter(cfg, generator=generator)
    replaced = {k: v for k, v in {"pyramid": pyramid, "refiner": refiner, "partitioner": partitioner}.items()
                if v is not None}
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


__all__ = ["inpaint_file", "make_inpainter"]
