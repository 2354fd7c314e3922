"""Writing results: LaMa's 8-bit truncation, 16-bit PNG/TIFF, atomic writes."""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".npy")


def check_output_suffix(out_ext: str) -> str:
    """`out_ext` as a folder run uses it (lower case), or a UserError naming the value and the choices."""
    from lama_refine.errors import UserError

    if str(out_ext).lower() not in OUTPUT_SUFFIXES:
        raise UserError(f"out_ext={out_ext}: use one of {', '.join(OUTPUT_SUFFIXES)}")
    return str(out_ext).lower()


SIXTEEN_BIT_OUTPUTS = (".png", ".tif", ".tiff")  # the others are 8-bit (.jpg, .webp) or float (.npy)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 by LaMa's rule `clip(x * 255, 0, 255).astype(uint8)` (truncation)."""
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def to_uint16(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint16 by the same truncating rule (exact for values read as k / 65535)."""
    return np.clip(image * 65535, 0, 65535).astype(np.uint16)


def to_hwc(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) tensor -> (H, W, 3) float32 numpy array."""
    return image[0].permute(1, 2, 0).detach().cpu().numpy().astype(np.float32)


def _file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask); mkstemp's files are 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it into place, so a
    crash never leaves a half-written output under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_is_intact(path: Path) -> bool:
    """Whether an existing output looks whole: a `.npy` whose data is all there, an image whose
    header Pillow reads and whose structure it verifies (for PNG: every chunk's checksum, without
    decoding, so checking a large batch of skipped outputs stays cheap)."""
    try:
        if path.suffix.lower() == ".npy":
            np.load(path, mmap_mode="r")  # checks the header against the file's length
            return True
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # noqa: BLE001 - whatever fails to read is not intact
        return False


def stale_temporaries(outdir: Path) -> dict[Path, list[Path]]:
    """The temporary files killed runs left under outdir (write_atomic's `.NAME.XXXX.tmp`), by
    the output they were for. Found in one pass at the start; each is removed when its output is
    written again, never before: another shard may be writing it right now."""
    found: dict[Path, list[Path]] = {}
    for top, dirs, files in os.walk(outdir):
        dirs[:] = [d for d in dirs if d != ".lama-refine"]
        for name in files:
            if name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3:
                output = name[1 : -len(".tmp")].rsplit(".", 1)[0]  # mkstemp's random part has no dot
                found.setdefault(Path(top) / output, []).append(Path(top) / name)
    return found


def png16_bytes(array: np.ndarray) -> bytes:
    """(H, W, 3) uint16 -> a 16-bit RGB PNG (Pillow cannot write one). Every row uses the `Up`
    filter (difference to the row above), which numpy computes for all rows at once."""
    h, w, c = array.shape
    rows = np.ascontiguousarray(array, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    up = rows.copy()
    up[1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as PNG's filters do
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # 16 bits, colour type 2 = RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def tiff16_bytes(array: np.ndarray) -> bytes:
    """(H, W, 3) uint16 -> a 16-bit RGB TIFF, one Deflate-compressed strip (Pillow cannot write
    16-bit colour TIFFs)."""
    h, w, c = array.shape
    data = zlib.compress(array.astype("<u2").tobytes(), 6)
    tags = [  # (tag, type, count, value): type 3 = SHORT, 4 = LONG
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, 3, None),
        (259, 3, 1, 8),
        (262, 3, 1, 2),
        (273, 4, 1, None),
        (277, 3, 1, c),
        (278, 4, 1, h),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(tags) + 4
    bits_offset = ifd_offset + ifd_size
    strip_offset = bits_offset + 2 * c
    entries = b""
    for tag, kind, count, value in tags:
        if tag == 258:
            value = bits_offset
        elif tag == 273:
            value = strip_offset
        packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        entries += struct.pack("<HHI", tag, kind, count) + packed
    ifd = struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + struct.pack("<3H", 16, 16, 16) + data


class _PythonWriter:
    """A file seen only through its write(), so numpy writes in chunks instead of tofile()."""

    def __init__(self, f):
        self.write = f.write


def write_result(path: Path, image: Tensor, bits: int = 8, quality: int = 95) -> None:
    """(1, 3, H, W) in [0, 1] -> `path` by its suffix, atomically:
    `.png`/`.tif`: 8-bit RGB with LaMa's truncation, 16-bit when `bits` is 16; `.jpg`/`.webp`:
    8-bit at `quality` (`.webp` at 100 is lossless); `.npy`: float32 HxWx3 in [0, 1]."""
    array = to_hwc(image)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"unsupported output extension {path.suffix!r}; use one of {OUTPUT_SUFFIXES}")
    if suffix == ".npy":

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                # Through Python's write(), not numpy's tofile(): a full disk then raises
                # OSError(ENOSPC) rather than "problem writing element N to file".
                np.lib.format.write_array(_PythonWriter(f), array)
    elif bits == 16 and suffix in SIXTEEN_BIT_OUTPUTS:
        encode = png16_bytes if suffix == ".png" else tiff16_bytes

        def write(tmp: Path) -> None:
            tmp.write_bytes(encode(to_uint16(array)))
    else:
        formats: dict[str, dict[str, Any]] = {
            ".png": {"format": "PNG"},
            ".tif": {"format": "TIFF", "compression": "tiff_deflate"},
            ".tiff": {"format": "TIFF", "compression": "tiff_deflate"},
            ".jpg": {"format": "JPEG", "quality": quality},
            ".jpeg": {"format": "JPEG", "quality": quality},
            ".webp": {"format": "WEBP", "quality": quality, "lossless": quality >= 100},
        }
        options = formats[suffix]

        def write(tmp: Path) -> None:
            Image.fromarray(to_uint8(array)).save(tmp, **options)

    write_atomic(path, write)
