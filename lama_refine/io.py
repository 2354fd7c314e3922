"""Reading photos and masks, finding them in LaMa's folder layout, writing results safely."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
OUTPUT_SUFFIXES = (".png", ".npy")


class InputError(ValueError):
    """A problem with one input file; the message names the file."""


@dataclass(frozen=True)
class Job:
    """One mask to inpaint: its image, and where the result goes relative to outdir."""

    image: Path
    mask: Path
    relative: Path  # the mask's path relative to indir; the output is outdir / relative.with_suffix(ext)

    def output(self, outdir: Path, ext: str) -> Path:
        return outdir / self.relative.with_suffix(ext)


def image_for_mask(mask: Path) -> Path:
    """LaMa's rule: `photo_mask001.png` -> `photo.png` (cut at the last `_mask`); other image
    suffixes are tried after `.png`. Returns the `.png` name when none exists."""
    stem = mask.name.rsplit("_mask", 1)[0]
    candidates = [mask.with_name(stem + suffix) for suffix in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), candidates[0])


def find_jobs(indir: str | os.PathLike) -> list[Job]:
    """Every `*mask*.png` under `indir` (recursive, sorted) with its image, LaMa's layout."""
    root = Path(indir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist or is not a folder")
    masks = sorted(p for p in root.rglob("*mask*.png") if p.is_file())
    return [Job(image_for_mask(m), m, m.relative_to(root)) for m in masks]


def _open(path: Path, mode: str) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert(mode))
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: cannot read as an image ({e})") from e


def read_image(path: str | os.PathLike) -> Tensor:
    """An image file -> (1, 3, H, W) float32 in [0, 1] (RGB, 8-bit / 255, as LaMa reads it)."""
    array = _open(Path(path), "RGB").astype(np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def read_mask(path: str | os.PathLike) -> Tensor:
    """A mask file -> (1, 1, H, W) float32 in {0, 1}: any non-zero grey value is a hole."""
    array = _open(Path(path), "L")
    return torch.from_numpy((array > 0).astype(np.float32))[None, None]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 by LaMa's rule `clip(x * 255, 0, 255).astype(uint8)` (truncation)."""
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def to_hwc(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) tensor -> (H, W, 3) float32 numpy array."""
    return image[0].permute(1, 2, 0).detach().cpu().numpy().astype(np.float32)


def write_atomic(path: Path, write) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it into place, so a
    crash never leaves a half-written output under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(path: Path, image: Tensor) -> None:
    """(1, 3, H, W) in [0, 1] -> `.png` (8-bit RGB, LaMa's truncation) or `.npy` (float32 HxWx3)."""
    array = to_hwc(image)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, array)
    elif suffix == ".png":
        def write(tmp: Path) -> None:
            Image.fromarray(to_uint8(array)).save(tmp, format="PNG")
    else:
        raise ValueError(f"unsupported output extension {path.suffix!r}; use one of {OUTPUT_SUFFIXES}")
    write_atomic(path, write)
