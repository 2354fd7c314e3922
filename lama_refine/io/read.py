"""Reading photos and masks: decoding, EXIF orientation, bit depth.

Pixel rules. 8-bit images are LaMa's: PIL `convert('RGB')` / 255 (palette expanded, grey
replicated, alpha dropped, not composited). 16-bit images (grey `I;16`, or RGB(A) PNG/TIFF with
16 bits per sample) are value / 65535, grey replicated, alpha dropped. Masks are grey levels on a
0-255 scale (16-bit masks / 257). Every file's own EXIF orientation is applied.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


class InputError(ValueError):
    """A problem with one input file; the message starts with the file's path."""


def check_readable(path: Path) -> None:
    """The problems Pillow would report confusingly, named plainly."""
    if not path.exists():
        raise InputError(f"{path}: {'broken symbolic link' if path.is_symlink() else 'no such file'}")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied")


def open_image(path: Path) -> Image.Image:
    """The decoded image, EXIF orientation applied, with problems as InputError naming the file."""
    check_readable(path)
    try:
        with Image.open(path) as im:
            colour16 = _is_16bit_colour(im)
            im.load()  # decode here: a truncated file fails now, not later
            oriented = ImageOps.exif_transpose(im)
            oriented.info["colour16"] = colour16
            return oriented
    except PermissionError as e:
        raise InputError(f"{path}: permission denied") from e
    except UnidentifiedImageError as e:
        raise InputError(f"{path}: not an image (Pillow cannot identify it)") from e
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: too many pixels for Pillow's safety limit ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise InputError(f"{path}: truncated or corrupt image ({e})") from e


def _is_16bit_colour(im: ImageFile.ImageFile) -> bool:
    """An RGB(A) PNG or TIFF with 16 bits per sample, which Pillow decodes to 8 bits."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return False
    args = im.tile[0][3]
    rawmode = args[0] if isinstance(args, tuple) else args
    return isinstance(rawmode, str) and ";16" in rawmode


# Pillow's exif_transpose methods as numpy operations on (H, W, ...) arrays, by EXIF orientation.
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def orient(array: np.ndarray, orientation: int | None) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, ...) array, as PIL's exif_transpose does."""
    return np.ascontiguousarray(_ORIENT.get(orientation or 1, lambda a: a)(array))


def _read_16bit_colour(path: Path) -> np.ndarray | None:
    """(H, W, 3 or 4) uint16 RGB(A) of a 16-bit PNG/TIFF, oriented; None without OpenCV (the
    optional `sixteen` extra), in which case Pillow's 8-bit reading is used."""
    try:
        import cv2
    except ImportError:
        return None
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16 or array.ndim != 3:
        return None
    array = array[..., [2, 1, 0, 3][: array.shape[-1]]]  # BGR(A) -> RGB(A)
    with Image.open(path) as im:
        orientation = im.getexif().get(0x0112)
    return orient(array, orientation)


@dataclass
class Picture:
    """A decoded image: (1, 3, H, W) float32 in [0, 1]; its alpha (H, W) on a 0-255 float scale
    or None; its bit depth (16-bit input gives 16-bit PNG/TIFF output); notes for the report."""

    image: Tensor
    alpha: np.ndarray | None
    bits: int
    notes: list[str] = field(default_factory=list)


def _rgb_tensor(array: np.ndarray, scale: float) -> Tensor:
    return torch.from_numpy(array.astype(np.float32) / scale).permute(2, 0, 1)[None].contiguous()


def read_picture(path: str | os.PathLike) -> Picture:
    """An image file by the module's pixel rules (8-bit: exactly LaMa's)."""
    path = Path(path)
    im = open_image(path)
    if im.mode == "F":
        raise InputError(f"{path}: 32-bit float images are not supported (convert to 8 or 16 bit)")
    if im.mode.startswith("I"):  # 16-bit grey (I;16*, or I as older Pillows open 16-bit PNGs)
        grey = np.clip(np.asarray(im, dtype=np.float32), 0, 65535)
        return Picture(_rgb_tensor(np.repeat(grey[..., None], 3, axis=2), 65535), None, 16)
    if im.info.get("colour16"):
        array = _read_16bit_colour(path)
        if array is not None:
            alpha = array[..., 3].astype(np.float32) / 257 if array.shape[-1] == 4 else None
            return Picture(_rgb_tensor(array[..., :3], 65535), alpha, 16)
        note = "16-bit colour read at 8-bit precision (install opencv-python-headless for 16 bits)"
        notes = [note]
    else:
        notes = []
    alpha = np.asarray(im.getchannel("A"), dtype=np.float32) if im.mode in ("RGBA", "LA", "PA") else None
    if im.mode == "P" and "transparency" in im.info:
        alpha = np.asarray(im.convert("RGBA").getchannel("A"), dtype=np.float32)
    return Picture(_rgb_tensor(np.asarray(im.convert("RGB")), 255), alpha, 8, notes)


def read_image(path: str | os.PathLike) -> Tensor:
    """An image file -> (1, 3, H, W) float32 in [0, 1] (RGB, 8-bit / 255, as LaMa reads it)."""
    return read_picture(path).image


def read_mask_levels(path: str | os.PathLike) -> np.ndarray:
    """A mask file -> (H, W) float32 grey levels on a 0-255 scale (8-bit: PIL `convert('L')`;
    16-bit: value / 257)."""
    path = Path(path)
    im = open_image(path)
    if im.mode.startswith("I") or im.mode == "F":
        return np.asarray(im, dtype=np.float32) / 257
    return np.asarray(im.convert("L"), dtype=np.float32)


def is_lossy(path: str | os.PathLike) -> bool:
    """Whether an image file is lossily compressed (JPEG, or WEBP without its lossless VP8L
    bitstream), by its bytes, not its name: compression noise then surrounds every edge."""
    try:
        with open(path, "rb") as file:
            head = file.read(1 << 20)
    except OSError:
        return False
    if head.startswith(b"\xff\xd8\xff"):
        return True
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return False
    offset = 12
    while offset + 8 <= len(head):  # the first bitstream chunk decides
        fourcc, size = head[offset : offset + 4], struct.unpack("<I", head[offset + 4 : offset + 8])[0]
        if fourcc in (b"VP8 ", b"VP8L"):
            return fourcc == b"VP8 "
        offset += 8 + size + (size & 1)
    return False


def read_mask(path: str | os.PathLike) -> Tensor:
    """A mask file -> (1, 1, H, W) float32 in {0, 1}: any non-zero grey value is a hole."""
    return torch.from_numpy((read_mask_levels(path) > 0).astype(np.float32))[None, None]
