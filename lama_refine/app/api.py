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
import logging
import os
import shlex
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from lama_refine.app.progress import ScaleProgress
from lama_refine.config import build_inpainter
from lama_refine.errors import UserError
from lama_refine.io import (
    InputError,
    MaskRule,
    binarize,
    hole_problem,
    is_lossy,
    open_image,
    read_image,
    read_mask,
    read_mask_levels,
    to_hwc,
    to_uint8,
    write_result,
)
from lama_refine.overrides import compose_checked
from lama_refine.parts.partition import DevicePartitioner
from lama_refine.parts.pyramid import PyramidBuilder
from lama_refine.parts.refine import RefineHooks, Refiner
from lama_refine.perf import allocator as allocators
from lama_refine.perf.switches import apply_process_settings
from lama_refine.pipeline import Inpainter

log = logging.getLogger(__name__)

Overrides = Sequence[str] | str | Mapping[str, Any]


def make_inpainter(
    config: DictConfig | Overrides = (),
    generator: nn.Module | None = None,
    *,
    pyramid: PyramidBuilder | None = None,
    refiner: Refiner | None = None,
    partitioner: DevicePartitioner | None = None,
) -> Inpainter:
    """An `Inpainter` from a composed config or from command-line style overrides.

    `generator` replaces the model `model.path` names (it is not loaded then); `pyramid`,
    `refiner` and `partitioner` objects replace the configured parts, so one part can be your
    own object while the rest come from the config. `indir` and `outdir` are not needed.

    An entry point: it applies the config's process-wide `perf` settings (CPU threads, glibc's
    mmap threshold; `perf.apply_process_settings`) to this process.
    """
    cfg = config if isinstance(config, DictConfig) else compose_checked(override_list(config))[0]
    inpainter = build_inpainter(cfg, generator=generator)
    apply_process_settings(inpainter.perf)
    parts: dict[str, Any] = {"pyramid": pyramid, "refiner": refiner, "partitioner": partitioner}
    replaced = {k: v for k, v in parts.items() if v is not None}
    return dataclasses.replace(inpainter, **replaced) if replaced else inpainter


def inpaint_file(
    inpainter: Inpainter, image: str | os.PathLike, mask: str | os.PathLike, out: str | os.PathLike | None = None
) -> Tensor:
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


def override_list(overrides: Overrides) -> list[str]:
    """`overrides` as the command line's list: a list or tuple of `key=value` strings, one string
    (split like a shell does: `"refine=false devices=cpu"`), or a mapping (`{"refine": False}`,
    `{"refiner": {"n_iters": 5}}`); anything else is a TypeError."""
    if isinstance(overrides, str):
        return shlex.split(overrides)
    if isinstance(overrides, Mapping):
        return [f"{key}={_override_value(value)}" for key, value in _flatten(overrides)]
    if isinstance(overrides, (list, tuple)):
        wrong = [o for o in overrides if not isinstance(o, str)]
        if wrong:
            raise TypeError(
                f"overrides: each item must be a 'key=value' string, got {wrong[0]!r} "
                f"({type(wrong[0]).__name__}); e.g. ['refine=false'] or {{'refine': False}}"
            )
        return list(overrides)
    raise TypeError(
        f"overrides: expected a list of 'key=value' strings (['refine=false']), one such string or "
        f"a mapping ({{'refine': False}}), got {type(overrides).__name__}"
    )


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"overrides: keys must be strings like 'refiner.n_iters', got {key!r}")
        if isinstance(value, Mapping):
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _override_value(value: Any) -> str:
    """A Python value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if text and all(c.isalnum() or c in "._-/:+~@" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _is_path(value: Any) -> TypeGuard[str | os.PathLike[str]]:
    return isinstance(value, (str, os.PathLike))


def image_array(image: Image.Image | np.ndarray | str | os.PathLike) -> np.ndarray:
    """A PIL image (any mode; converted to RGB, as LaMa reads files), an image file's path, or an
    HxWx3 array -> the HxWx3 array the pipeline's input and the known pixels are taken from:
    uint8, or float in [0, 1] as given."""
    if _is_path(image):
        try:
            image = open_image(Path(image))
        except InputError as e:  # a user's file: their mistake, said without a traceback
            raise UserError(f"image: {e}") from None
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise UserError(
            f"image: expected a PIL image, a file path or an HxWx3 RGB array, got "
            f"{'an array of shape ' + str(array.shape) if array.dtype != object else type(image).__name__}"
        )
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1 or np.isnan(array).any()):
            raise UserError("image: a float array must hold values in [0, 1] (uint8 arrays hold 0-255)")
        return array
    raise UserError(f"image: expected uint8 or float values, got {array.dtype}")


def hole_array(mask: Image.Image | np.ndarray | str | os.PathLike, rule: MaskRule | None = None) -> np.ndarray:
    """A mask file's path or a PIL mask (grey levels, by `rule` as on the command line: above
    `mask.threshold`, JPEG masks above `mask.lossy_threshold`, `mask.invert`), or an HxW array
    (bool, or numbers where non-zero is a hole) -> HxW bool, True in the hole."""
    rule = rule if rule is not None else MaskRule()
    if _is_path(mask):
        path = Path(mask)
        try:
            return binarize(read_mask_levels(path), rule, lossy=is_lossy(path))
        except InputError as e:
            raise UserError(f"mask: {e}") from None
    if isinstance(mask, Image.Image):
        return binarize(np.asarray(mask.convert("L"), dtype=np.float32), rule, lossy=mask.format == "JPEG")
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise UserError(
            f"mask: expected a PIL image, a file path or an HxW array, got "
            f"{'an array of shape ' + str(array.shape) if array.dtype != object else type(mask).__name__}"
        )
    holes = array.astype(bool) if array.dtype == bool else array > 0
    return ~holes if rule.invert else holes


_last_built: tuple[tuple[str, ...], Any] | None = None
_said: set[str] = set()  # what say_allocator has said in this process
_configs: dict[tuple[str, ...], DictConfig] = {}


def _config_for(overrides: Sequence[str]) -> DictConfig:
    key = tuple(overrides)
    if key not in _configs:
        _configs.clear()  # one entry: a loop uses one set of overrides
        _configs[key] = compose_checked(list(overrides))[0]
    return _configs[key]


def _inpainter_for(overrides: Sequence[str]):
    """The pipeline for `overrides`, kept from the previous call with the same overrides, so a
    loop over `inpaint(image, mask)` loads the model once."""
    global _last_built
    key = tuple(overrides)
    if _last_built is None or _last_built[0] != key:
        _last_built = None  # free the previous model before building the next
        cfg = _config_for(key)
        say_allocator(cfg)
        inpainter = make_inpainter(cfg)
        if cfg.get("progress", True):
            inpainter = dataclasses.replace(inpainter, hooks=RefineHooks(progress=ScaleProgress(True, position=0)))
        _last_built = (key, inpainter)
    return _last_built[1]


def say_allocator(cfg: DictConfig) -> str | None:
    """Once per process, on glibc's malloc: what `lama-refine` would run on with this config's
    `perf.allocator`, and the command that gives the same to a Python script. Logged at INFO, and
    written to stderr as well where logging is not set up to show it. Returns the line."""
    if "python" in _said or not sys.platform.startswith("linux") or not allocators.on_glibc_malloc():
        return None
    _said.add("python")
    value = (cfg.get("perf") or {}).get("allocator", allocators.AUTO)
    try:
        wanted = allocators.resolve(value)
    except ValueError:
        return None
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] not in ("", "-c") else "your_script.py"
    if wanted is None:
        library = allocators.find_library("tcmalloc")
        if library is not None or allocators.normalise(value) is None:
            return None  # the command line runs on the system allocator too, by choice
        multiarch = f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}"
        line = (
            f"from Python as from lama-refine, this machine runs on the system allocator: tcmalloc, which "
            f"lama-refine would use, is not installed, and it keeps the peak memory far lower (docs/benchmarks.md). "
            f"To get it: apt install libtcmalloc-minimal4, then LD_PRELOAD={multiarch}/libtcmalloc_minimal.so.4 "
            f"python {script}"
        )
    else:
        env = allocators.preload_env(wanted, {})
        if env is None:
            return None
        line = (
            f"lama-refine would run on {wanted} (perf.allocator={value}), with a far lower peak memory "
            f"(docs/benchmarks.md); this Python process runs on the system allocator. For the same from Python: "
            f"LD_PRELOAD={env['LD_PRELOAD']} python {script}"
        )
    allocators._said.update({"missing", "not-loaded"})  # this line says what check_auto would
    log.info("%s", line)
    if not (log.isEnabledFor(logging.INFO) and log.hasHandlers()):
        tqdm.write(f"lama-refine: {line}", file=sys.stderr)
    return line


def inpaint(
    image: Image.Image | np.ndarray | str | os.PathLike,
    mask: Image.Image | np.ndarray | str | os.PathLike,
    overrides: Overrides = (),
    inpainter: Inpainter | None = None,
) -> Image.Image | np.ndarray:
    """Inpaint one image; returns the same kind as `image` (a PIL image for a path), at its size.

    `image`: a PIL image (any mode, converted to RGB), an image file's path (read as the command
    line reads it, EXIF orientation applied) or an HxWx3 array, uint8 or float in [0, 1]. `mask`:
    a PIL image or a path (grey levels by the `mask.*` rules: non-zero is the hole by default,
    JPEG masks above level 127) or an HxW array (non-zero or True is the hole). A hole over more
    than half the photo is refused as a probably inverted mask (`mask.invert=true`,
    `mask.max_hole=1.0`). Returns a PIL RGB image for a PIL image or a path, uint8 HxWx3 for
    uint8, float32 HxWx3 for float; the known pixels are the input's own. `overrides` are the
    command line's, as a list (`["refine=false"]`), one string or a mapping (`{"refine": False}`);
    `progress=false` silences the progress bar. `inpainter`, from `make_inpainter(overrides)`, is
    used instead of building one (the last one built from `overrides` is reused anyway).
    """
    overrides = override_list(overrides)
    cfg = _config_for(overrides)
    rule = MaskRule.from_config(cfg.get("mask"))
    known, holes = image_array(image), hole_array(mask, rule)
    if holes.shape != known.shape[:2]:
        raise UserError(
            f"mask is {holes.shape[0]}x{holes.shape[1]} but the image is "
            f"{known.shape[0]}x{known.shape[1]} (height x width)"
        )
    problem = hole_problem(float(holes.mean()) if holes.size else 0.0, rule)
    if problem:
        raise UserError(f"mask: {problem}")
    eight_bit = known.dtype == np.uint8
    floats = known.astype(np.float32) / 255 if eight_bit else known.astype(np.float32)
    out = floats.copy()
    if holes.any():
        pipeline = inpainter if inpainter is not None else _inpainter_for(overrides)
        image_t = torch.from_numpy(floats).permute(2, 0, 1)[None].contiguous()
        mask_t = torch.from_numpy(holes.astype(np.float32))[None, None]
        try:
            out = to_hwc(pipeline(image_t, mask_t))
        finally:
            progress = getattr(pipeline.refiner, "progress", None)
            if isinstance(progress, ScaleProgress):
                progress.close()
    if eight_bit:
        out = to_uint8(out)
    out[~holes] = known[~holes]  # exactly the input's values, not their float round trip
    return Image.fromarray(out) if isinstance(image, Image.Image) or _is_path(image) else out


__all__ = ["hole_array", "image_array", "inpaint", "inpaint_file", "make_inpainter", "override_list"]
