"""What a user can get wrong before the first image is processed, found and said plainly.

`check_command_line(overrides)` composes the app's config from command-line overrides the way
Hydra will, and turns every mistake into one `UserError`: a message naming what is wrong and the
value given, with what to do (for an unknown key, the closest keys that exist). It is run before
Hydra starts, so that nothing (no log folder, no config save) happens on a command that cannot
work; Hydra's own messages ("To append to your config use +key=...") are for config authors.

The checks go from the command line inwards: overrides that parse, keys and group options that
exist, values of the type their default has, devices that are here (those four in
`overrides.compose_checked`, which the Python API shares), the parts' own argument checks, then
the files: inputs that exist, an output folder that can be written, a model file.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from .batch import Shard, overwrite_mode
from .config import build_parts, model_path, perf_config
from .errors import UserError, describe_os_error
from .io import check_output_suffix
from .overrides import (LIBRARY_GROUPS, absolute, closest, compose_checked, config_groups,  # noqa: F401 - the command line's names
                        leaf_keys, parse_overrides, selectable_groups, sweeps)
from .pipeline import check_region
from .region import CropConfig

USAGE = ("usage: lama-refine indir=DIR outdir=DIR [key=value ...]        inpaint a folder (photo.png + photo_mask*.png)\n"
         "       lama-refine image=FILE mask=FILE out=FILE [key=value ...] inpaint one image\n"
         "       model.path defaults to the built-in demo model; lama-refine --help lists every key")

# ---------------------------------------------------------------------------------------------
# Files and folders
# ---------------------------------------------------------------------------------------------

def is_single_image(cfg: DictConfig) -> bool:
    """`image=`/`mask=`/`out=`: one image, one command (else a folder: `indir`/`outdir`)."""
    if any(cfg.get(k) is not None for k in ("image", "out")):
        return True
    return (cfg.get("mask") or {}).get("file") is not None and not given(cfg, "indir")


def given(cfg: DictConfig, key: str) -> bool:
    return not OmegaConf.is_missing(cfg, key) and cfg.get(key) not in (None, "")


def check_single_image(cfg: DictConfig, output_suffixes: Sequence[str]) -> None:
    mask = cfg.mask.get("file")
    from_alpha = bool(cfg.mask.get("from_alpha"))
    missing = [k for k in ("image", "mask", "out")
               if (mask is None and not from_alpha if k == "mask" else cfg.get(k) is None)]
    if missing:
        raise UserError(f"one image needs image=FILE, mask=FILE and out=FILE; missing: "
                        f"{', '.join(k + '=' for k in missing)}")
    for key in ("indir", "outdir", "maskdir"):
        if given(cfg, key):
            raise UserError(f"{key}= is for a folder, image= for one image: give one or the other")
    check_input_file("image", cfg.image)
    if mask is not None:
        check_input_file("mask", mask)
    out = absolute(cfg.out)
    if out.suffix.lower() not in output_suffixes:
        raise UserError(f"out={cfg.out}: the suffix names the format; use one of {', '.join(output_suffixes)}")
    if out.is_dir():
        raise UserError(f"out={cfg.out}: is a folder; name the output file, e.g. out={Path(str(cfg.out)) / 'result.png'}")


def check_input_file(key: str, value: Any) -> None:
    path = absolute(value)
    if not path.exists():
        raise UserError(f"{key}={value}: no such file")
    if path.is_dir():
        raise UserError(f"{key}={value}: is a folder, not an image file"
                        + ("; for a folder use indir= and outdir=" if key == "image" else ""))
    if not os.access(path, os.R_OK):
        raise UserError(f"{key}={value}: permission denied")


def check_folders(cfg: DictConfig) -> None:
    missing = [k for k in ("indir", "outdir") if not given(cfg, k)]
    if missing:
        raise UserError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: "
                        "indir=DIR (photos with *_mask*.png beside them) outdir=DIR (where results go); "
                        "or image=FILE mask=FILE out=FILE for one image")
    indir = absolute(cfg.indir)
    if not indir.exists():
        raise UserError(f"indir={cfg.indir}: no such folder")
    if not indir.is_dir():
        raise UserError(f"indir={cfg.indir}: is a file, not a folder; for one image use image={cfg.indir} mask=... out=...")
    if (cfg.mask or {}).get("file") is not None:
        raise UserError(f"mask={cfg.mask.file} is for one image (with image= and out=); for a folder use "
                        f"maskdir={cfg.mask.file}, or put *_mask.png files beside the photos")
    maskdir = cfg.get("maskdir")
    if maskdir and not absolute(maskdir).exists():
        raise UserError(f"maskdir={maskdir}: no such file or folder")


def check_writable_folder(key: str, folder: Path, shown: Any = None) -> None:
    """Create `folder` if needed and write a small file in it, so that a path under a file, a
    read-only place or a full disk is found now, before Hydra writes its log there."""
    shown = folder if shown is None else shown
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{key}={shown}: {existing} is a file, so no folder can be made under it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lama-refine-probe.", suffix=".tmp") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UserError(f"{key}={shown}: cannot write there ({describe_os_error(e)})",
                        exit_code=1 if e.errno in (errno.ENOSPC, errno.EDQUOT) else 2) from None


# ---------------------------------------------------------------------------------------------
# Everything
# ---------------------------------------------------------------------------------------------

def check_parts(cfg: DictConfig) -> None:
    """The parts build (their own argument checks: `refiner.n_iters=0`, an unknown optimiser
    argument added with `+`, ...), and the app's enumerations hold."""
    try:
        overwrite_mode(cfg.overwrite)
        Shard.parse(cfg.get("shard"))
        perf_config(cfg)
        CropConfig(**dict(cfg.get("crop") or {}))
        check_region(cfg.get("region", "whole"))
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    try:
        build_parts(cfg)
    except InstantiationException as e:
        raise UserError(_instantiation_message(e)) from None
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None


def _instantiation_message(error: Exception) -> str:
    """Hydra's "Error in call to target 'X':\\nValueError('...')\\nfull_key: refiner" as one line."""
    cause = error.__cause__ or error
    lines = [line for line in str(error).splitlines() if line.strip()]
    key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
    target = lines[0].replace("Error in call to target", "").strip(" :'") if lines else ""
    text = str(cause) if cause is not error else " ".join(lines[1:2])
    where = f"{key} ({target})" if key else target
    return f"{where}: {text}"


def check_model_and_devices(cfg: DictConfig) -> None:
    given_path = cfg.model.get("path")
    path = model_path(cfg.model)
    if not path.exists():
        raise UserError(f"model.path={given_path}: no such file or folder; leave model.path unset for the built-in "
                        "demo model, or give a LaMa experiment folder, a .ckpt, a TorchScript .pt or a .safetensors file")
    if not os.access(path, os.R_OK):
        raise UserError(f"model.path={given_path}: permission denied")
    # the devices were parsed and checked where the config was read (config.read_config)


def check_command_line(overrides: Sequence[str], output_suffixes: Sequence[str]) -> DictConfig:
    """The config `overrides` compose to, checked end to end (see the module's docstring)."""
    cfg, _ = compose_checked(overrides)
    check_parts(cfg)
    single = is_single_image(cfg)
    if single:
        check_single_image(cfg, output_suffixes)
    else:
        check_output_suffix(cfg.out_ext)
        check_folders(cfg)
    check_model_and_devices(cfg)
    # last: it makes the output folder, which a command that fails on anything else must not leave
    if single:
        check_writable_folder("out", absolute(cfg.out).parent, shown=Path(str(cfg.out)).parent)
    else:
        check_writable_folder("outdir", absolute(cfg.outdir), shown=cfg.outdir)
    return cfg


__all__ = ["USAGE", "check_command_line", "sweeps", "closest", "compose_checked", "config_groups", "is_single_image",
           "leaf_keys", "selectable_groups"]
