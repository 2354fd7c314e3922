"""Reading photos and masks, finding them in folder layouts, writing results safely.

Two layouts (README "Batch processing"):
- LaMa's: every `*mask*.png` under `indir` (recursive) is a mask; its image is the mask's name
  cut at the last `_mask`, with `.png` or another image suffix. The output is named after the mask.
- split (IOPaint's): images under `indir`, masks under `maskdir` at the same relative path and
  stem (any image suffix), or `maskdir` is one mask file for every image. The output is named
  after the image. With `mask.from_alpha`, images only: the hole is where the image is transparent.

Pixel rules. 8-bit images are LaMa's: PIL `convert('RGB')` / 255 (palette expanded, grey
replicated, alpha dropped, not composited). 16-bit images (grey `I;16`, or RGB(A) PNG/TIFF with
16 bits per sample) are value / 65535, grey replicated, alpha dropped. Masks are grey levels on a
0-255 scale (16-bit masks / 257); a pixel is a hole where its level is above `threshold` (0: any
non-zero pixel, LaMa's rule). Every file's own EXIF orientation is applied.
"""
from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".npy")
SIXTEEN_BIT_OUTPUTS = (".png", ".tif", ".tiff")  # the others are 8-bit (.jpg, .webp) or float (.npy)


class InputError(ValueError):
    """A problem with one input file; the message starts with the file's path."""


# ---------------------------------------------------------------------------------------------
# Finding jobs
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One image to inpaint: its mask (None: the hole is the image's transparency), and the
    output's path relative to outdir (without suffix). `problem` is set when pairing the files
    already failed (e.g. no image for this mask): the job is reported, never run."""

    image: Path
    mask: Path | None
    relative: Path  # the output is outdir / relative.with_suffix(ext)
    problem: str | None = None

    @property
    def name(self) -> Path:
        """The file that names this job in reports: the mask where there is one, else the image."""
        return self.mask if self.mask is not None else self.image

    def output(self, outdir: Path, ext: str) -> Path:
        return safe_output(outdir, self.relative, ext)


def safe_output(outdir: Path, relative: Path, ext: str) -> Path:
    """outdir / relative with `ext`, refused (InputError) if it would land outside outdir: an
    absolute or `..` relative path, or a symlinked folder under outdir that points elsewhere."""
    relative = Path(relative)
    if relative.is_absolute() or relative.anchor or ".." in relative.parts:
        raise InputError(f"{relative}: refused, its output would be written outside outdir {outdir}")
    out = Path(outdir) / relative.with_suffix(ext)
    root = Path(outdir).resolve()
    # resolve() follows the symlinks that exist; the output itself is replaced by rename, so only
    # the folder it lands in matters.
    if not out.parent.resolve().is_relative_to(root):
        raise InputError(f"{relative}: refused, {out.parent} leads outside outdir {outdir} (symlink?)")
    return out


def walk(root: Path, exclude: Iterable[Path] = ()) -> Iterator[Path]:
    """Every file and folder under `root`, recursively, following symlinked folders once each.

    Skipped: names starting with `.` (hidden files, macOS `._*` companions, our own temporary
    files and `.lama-refine/` logs) and the trees in `exclude` (an outdir inside indir, so that
    a rerun does not take its own outputs for inputs)."""
    excluded = {p.resolve() for p in exclude}
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen or Path(top).resolve() in excluded:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(dirs + files):
            path = Path(top) / name
            if not name.startswith(".") and not (excluded and path.resolve() in excluded):
                yield path


def has_image_suffix(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def sibling_candidates(base: Path, stem: str) -> list[Path]:
    """`base/stem` with each image suffix, lower case then upper case, `.png` first."""
    return [base / (stem + s) for s in IMAGE_SUFFIXES] + [base / (stem + s.upper()) for s in IMAGE_SUFFIXES]


def first_existing(candidates: list[Path]) -> Path | None:
    """The first candidate that is a file; else the first that exists at all (a folder named
    like an image is then reported as such); else None."""
    return next((c for c in candidates if c.is_file()), None) or next((c for c in candidates if c.exists()), None)


def image_for_mask(mask: Path) -> Path:
    """LaMa's rule: `photo_mask001.png` -> `photo.png` (cut at the last `_mask`); other image
    suffixes are tried after `.png`. Returns the `.png` name when none exists."""
    candidates = sibling_candidates(mask.parent, mask.name.rsplit("_mask", 1)[0])
    return first_existing(candidates) or candidates[0]


def _missing(what: str, name: Path, candidates: list[Path]) -> str:
    others = "/".join(dict.fromkeys(c.suffix.lower() for c in candidates[1:] if c.suffix.lower() != candidates[0].suffix))
    return f"{name}: no {what} (looked for {candidates[0]}, also as {others})"


def lama_jobs(root: Path, exclude: Iterable[Path] = ()) -> list[Job]:
    """LaMa's layout: every `*mask*.png` under root, with its image."""
    jobs = []
    for mask in walk(root, exclude):
        if "mask" not in mask.name or mask.suffix.lower() != ".png":
            continue
        candidates = sibling_candidates(mask.parent, mask.name.rsplit("_mask", 1)[0])
        image = first_existing(candidates)
        problem = None if image is not None else _missing("image for this mask", mask, candidates)
        if mask.is_dir():
            problem = f"{mask}: is a folder, not an image file"
        jobs.append(Job(image or candidates[0], mask, mask.relative_to(root), problem))
    return jobs


def split_jobs(root: Path, maskdir: Path, exclude: Iterable[Path] = ()) -> list[Job]:
    """IOPaint's layout: images under root; masks under maskdir at the same relative path and
    stem (any image suffix), or maskdir is a single mask file used for every image."""
    exclude = [*exclude, maskdir]
    images = [p for p in walk(root, exclude) if has_image_suffix(p)]
    if not maskdir.is_dir():
        return [Job(image, maskdir, image.relative_to(root)) for image in images]
    jobs, used = [], {}
    for image in images:
        rel = image.relative_to(root)
        candidates = sibling_candidates(maskdir / rel.parent, rel.stem)
        mask = first_existing(candidates)
        if mask is not None:
            used[mask] = image
        problem = None if mask is not None else _missing("mask for this image in maskdir", image, candidates)
        jobs.append(Job(image, mask or candidates[0], rel, problem))
    by_stem = {m.with_suffix(""): m for m in used}
    for mask in walk(maskdir):
        if not has_image_suffix(mask) or mask in used:
            continue
        rel = mask.relative_to(maskdir)
        twin = by_stem.get(mask.with_suffix(""))
        problem = (f"{mask}: ignored, {twin} is the mask of {used[twin]}" if twin is not None else
                   f"{mask}: no image for this mask (looked for {root / rel.with_suffix('')}.* under indir)")
        jobs.append(Job(root / rel, mask, rel, problem))
    return jobs


def alpha_jobs(root: Path, exclude: Iterable[Path] = ()) -> list[Job]:
    """Images only (mask.from_alpha): every image under root; the hole is its transparency."""
    return [Job(p, None, p.relative_to(root)) for p in walk(root, exclude) if has_image_suffix(p)]


def mark_collisions(jobs: list[Job]) -> list[Job]:
    """Two jobs with one output name (`a.jpg` and `a.png` in the split layout): the later one is
    reported instead of overwriting or skipping the first one's output."""
    owners: dict[str, Job] = {}
    marked = []
    for job in jobs:
        key = str(job.relative.with_suffix("")).lower()  # case-insensitive file systems collide too
        first = owners.setdefault(key, job)
        if first is not job and job.problem is None:
            job = Job(job.image, job.mask, job.relative,
                      f"{job.name}: its output name {job.relative.with_suffix('')} is already taken by {first.name}")
        marked.append(job)
    return marked


def find_jobs(indir: str | os.PathLike, maskdir: str | os.PathLike | None = None, from_alpha: bool = False,
              exclude: Iterable[str | os.PathLike] = ()) -> list[Job]:
    """Every job under `indir`, sorted by output name (the order shards split): LaMa's layout
    when `maskdir` is None, else the split layout; `from_alpha` takes holes from transparency.
    `exclude`: folders not to search (the outdir when it lies inside indir)."""
    root = Path(indir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist or is not a folder")
    exclude = [Path(p) for p in exclude]
    if from_alpha and maskdir is not None:
        raise ValueError("mask.from_alpha=true takes holes from the images: leave maskdir unset")
    if maskdir is not None and not Path(maskdir).exists():
        raise FileNotFoundError(f"maskdir {maskdir} does not exist")
    if from_alpha:
        jobs = alpha_jobs(root, exclude)
    elif maskdir is None:
        jobs = lama_jobs(root, exclude)
    else:
        jobs = split_jobs(root, Path(maskdir), exclude)
    jobs.sort(key=lambda j: (str(j.relative), str(j.name)))
    return mark_collisions(jobs)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

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


def _is_16bit_colour(im: Image.Image) -> bool:
    """An RGB(A) PNG or TIFF with 16 bits per sample, which Pillow decodes to 8 bits."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return False
    args = im.tile[0][3]
    rawmode = args[0] if isinstance(args, tuple) else args
    return isinstance(rawmode, str) and ";16" in rawmode


# Pillow's exif_transpose methods as numpy operations on (H, W, ...) arrays, by EXIF orientation.
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
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


def read_mask(path: str | os.PathLike) -> Tensor:
    """A mask file -> (1, 1, H, W) float32 in {0, 1}: any non-zero grey value is a hole."""
    return torch.from_numpy((read_mask_levels(path) > 0).astype(np.float32))[None, None]


@dataclass(frozen=True)
class MaskRule:
    """How grey levels become holes: `level > threshold` (levels 0-255), inverted on request,
    resized to the image (nearest) on request, then grown by `dilate` pixels (a square)."""

    threshold: float = 0
    invert: bool = False
    dilate: int = 0
    resize: bool = False
    from_alpha: bool = False


def binarize(levels: np.ndarray, rule: MaskRule) -> np.ndarray:
    """Grey levels (H, W) -> bool holes."""
    holes = levels > rule.threshold
    return ~holes if rule.invert else holes


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
    resized = Image.fromarray(holes.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
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
    size = tuple(picture.image.shape[-2:])
    if rule.from_alpha:
        if picture.alpha is None:
            raise InputError(f"{job.image}: has no alpha channel to take the hole from (mask.from_alpha=true)")
        levels = 255 - picture.alpha  # transparent = hole
    else:
        levels = read_mask_levels(job.mask)
    holes = binarize(levels, rule)
    if holes.shape != size:
        if not rule.resize:
            raise InputError(f"{job.mask}: mask is {holes.shape[0]}x{holes.shape[1]} but its image {job.image} "
                             f"is {size[0]}x{size[1]} (height x width); mask.resize=true resizes masks")
        notes.append(f"mask resized from {holes.shape[0]}x{holes.shape[1]} to {size[0]}x{size[1]}")
        holes = resize_nearest(holes, size)
    mask = dilate(torch.from_numpy(holes.astype(np.float32))[None, None], rule.dilate)
    return Inputs(picture.image, mask, picture.bits, notes)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

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


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
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
                output = name[1:-len(".tmp")].rsplit(".", 1)[0]  # mkstemp's random part has no dot
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
        (256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, None), (259, 3, 1, 8), (262, 3, 1, 2),
        (273, 4, 1, None), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1),
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
        options = {".png": {"format": "PNG"}, ".tif": {"format": "TIFF", "compression": "tiff_deflate"},
                   ".tiff": {"format": "TIFF", "compression": "tiff_deflate"},
                   ".jpg": {"format": "JPEG", "quality": quality}, ".jpeg": {"format": "JPEG", "quality": quality},
                   ".webp": {"format": "WEBP", "quality": quality, "lossless": quality >= 100}}[suffix]

        def write(tmp: Path) -> None:
            Image.fromarray(to_uint8(array)).save(tmp, **options)
    write_atomic(path, write)
