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

import contextlib
import errno
import importlib
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from lama_refine.batch.runner import Shard, overwrite_mode
from lama_refine.config import build_parts, model_path, perf_config
from lama_refine.errors import UserError, describe_os_error
from lama_refine.io import check_output_suffix
from lama_refine.overrides import (
    absolute,
    choices,
    closest,
    compose_checked,
    config_groups,
    leaf_keys,
    parse_overrides,
    selectable_groups,
    sweeps,
)
from lama_refine.pipeline import check_region
from lama_refine.region import CropConfig

USAGE = (
    "usage: lama-refine indir=DIR outdir=DIR [key=value ...]        inpaint a folder (photo.png + photo_mask*.png)\n"
    "       lama-refine image=FILE mask=FILE out=FILE [key=value ...] inpaint one image\n"
    "       model.path defaults to the built-in demo model; lama-refine --help lists every key"
)

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
    missing = [
        k for k in ("image", "mask", "out") if (mask is None and not from_alpha if k == "mask" else cfg.get(k) is None)
    ]
    if missing:
        raise UserError(
            f"one image needs image=FILE, mask=FILE and out=FILE; missing: {', '.join(k + '=' for k in missing)}"
        )
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
        raise UserError(
            f"out={cfg.out}: is a folder; name the output file, e.g. out={Path(str(cfg.out)) / 'result.png'}"
        )


def check_input_file(key: str, value: Any) -> None:
    path = absolute(value)
    if not path.exists():
        raise UserError(f"{key}={value}: no such file")
    if path.is_dir():
        raise UserError(
            f"{key}={value}: is a folder, not an image file"
            + ("; for a folder use indir= and outdir=" if key == "image" else "")
        )
    if not os.access(path, os.R_OK):
        raise UserError(f"{key}={value}: permission denied")


def check_folders(cfg: DictConfig) -> None:
    missing = [k for k in ("indir", "outdir") if not given(cfg, k)]
    if missing:
        raise UserError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: "
            "indir=DIR (photos with *_mask*.png beside them) outdir=DIR (where results go); "
            "or image=FILE mask=FILE out=FILE for one image"
        )
    indir = absolute(cfg.indir)
    if not indir.exists():
        raise UserError(f"indir={cfg.indir}: no such folder")
    if not indir.is_dir():
        raise UserError(
            f"indir={cfg.indir}: is a file, not a folder; for one image use image={cfg.indir} mask=... out=..."
        )
    if (cfg.mask or {}).get("file") is not None:
        raise UserError(
            f"mask={cfg.mask.file} is for one image (with image= and out=); for a folder use "
            f"maskdir={cfg.mask.file}, or put *_mask.png files beside the photos"
        )
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
        raise UserError(
            f"{key}={shown}: cannot write there ({describe_os_error(e)})",
            exit_code=1 if e.errno in (errno.ENOSPC, errno.EDQUOT) else 2,
        ) from None


def check_trace(cfg: DictConfig) -> None:
    """`trace=DIR` (optional) is a folder that can be made and written."""
    trace = cfg.get("trace")
    if trace is None or trace == "":
        return
    if not isinstance(trace, str):
        raise UserError(f"trace={trace}: give a folder, e.g. trace=outputs/trace, or leave trace unset")
    check_writable_folder("trace", absolute(trace), shown=trace)


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
    import_generator_module(cfg)
    try:
        build_parts(cfg)
    except InstantiationException as e:
        raise UserError(_instantiation_message(e)) from None
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None


def import_generator_module(cfg: DictConfig) -> None:
    """Import the module of a user's generator (`model._target_`) before the parts are built: its
    `register_generator` call names the front's features, which `refiner.optimize=` may choose (the
    run itself loads the model first). A module that does not import is the model check's to report."""
    target = OmegaConf.select(cfg, "model._target_")
    if isinstance(target, str) and "." in target:
        with contextlib.suppress(ImportError):
            importlib.import_module(target.rpartition(".")[0])


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
        raise UserError(
            f"model.path={given_path}: no such file or folder; leave model.path unset for the built-in "
            "demo model, or give a LaMa experiment folder, a .ckpt, a TorchScript .pt or a .safetensors file"
        )
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
    check_trace(cfg)
    # last: it makes the output folder, which a command that fails on anything else must not leave
    if single:
        check_writable_folder("out", absolute(cfg.out).parent, shown=Path(str(cfg.out)).parent)
    else:
        check_writable_folder("outdir", absolute(cfg.outdir), shown=cfg.outdir)
    return cfg


# ---------------------------------------------------------------------------------------------
# lama-refine-eval: the same checks on its config (`conf/evaluate.yaml`, which holds lama-refine's)
# ---------------------------------------------------------------------------------------------

EVAL_USAGE = (
    "usage: lama-refine-eval gt_dir=DIR outdir=DIR [mask_dir=DIR | masks.family=thin|medium|thick] "
    "[key=value ...]\n"
    "       lama-refine-eval --multirun gt_dir=DIR outdir=DIR refine=false,true [baseline=SETTING] ...\n"
    "       every key of lama-refine applies too; lama-refine-eval --help lists them"
)

LPIPS_NETS = ("alex", "vgg")


def quote_value(overrides: Sequence[str], key: str) -> list[str]:
    """`key=a=b,c` -> `key='a=b,c'`: a value that is itself an override (`baseline=refine=False`,
    a sweep's setting name) would not parse, so everything after the first `=` is the value."""
    out = []
    for o in overrides:
        name, eq, value = o.partition("=")
        if name == key and eq and value and value[0] not in "'\"" and ("=" in value or "," in value):
            o = f"{key}='{value}'" if "'" not in value else f'{key}="{value}"'
        out.append(o)
    return out


def check_baseline(baseline: Any, overrides: Sequence[str], multirun: bool) -> None:
    """`baseline=` names a setting of this sweep: a job number within it, or `key=value,...` with
    keys the sweep varies (the values are checked when the sweep has named its settings)."""
    if not multirun:
        raise UserError(
            f"baseline={baseline}: names the setting a --multirun sweep is compared with; "
            "add --multirun and sweep a key (e.g. refine=false,true)"
        )
    swept = {
        o.key_or_group: len(choices(o))
        for o in parse_overrides(overrides)
        if o.is_sweep_override() and not o.is_hydra_override()
    }
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        jobs = math.prod(swept.values())
        if not 0 <= baseline < jobs:
            raise UserError(f"baseline={baseline}: this sweep has jobs 0-{jobs - 1}")
        return
    for part in str(baseline).split(","):
        key = part.partition("=")[0].strip()
        if key not in swept:
            raise UserError(
                f"baseline={baseline}: {key} is not a key this sweep varies "
                f"({', '.join(swept) or 'none'}); name a setting as its folder is named, "
                f"e.g. baseline={next(iter(swept), 'refine')}=VALUE"
            )


def check_eval_command_line(overrides: Sequence[str], multirun: bool = False) -> DictConfig:
    """lama-refine-eval's config checked as lama-refine's is (`check_command_line`): the same
    keys, types, parts, model and devices, then its own inputs and outputs."""
    cfg, _ = compose_checked(overrides, config_name="evaluate")
    check_parts(cfg)
    missing = [k for k in ("gt_dir", "outdir") if not given(cfg, k)]
    if missing:
        raise UserError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: "
            "gt_dir=DIR (the ground-truth photos) outdir=DIR (where the tables and pictures go)"
        )
    gt_dir = absolute(cfg.gt_dir)
    if not gt_dir.exists():
        raise UserError(f"gt_dir={cfg.gt_dir}: no such folder")
    if not gt_dir.is_dir():
        raise UserError(f"gt_dir={cfg.gt_dir}: is a file; give the folder of ground-truth photos")
    mask_dir = cfg.get("mask_dir")
    if mask_dir and not absolute(mask_dir).is_dir():
        raise UserError(
            f"mask_dir={mask_dir}: no such folder; leave it unset to use the *_mask*.png beside the "
            "photos, else generated masks"
        )
    from lama_refine.train.mask_families import FAMILIES

    if cfg.masks.family not in FAMILIES:
        raise UserError(f"masks.family={cfg.masks.family}: use one of {', '.join(sorted(FAMILIES))}")
    if cfg.get("lpips") is not None and cfg.lpips not in LPIPS_NETS:
        raise UserError(f"lpips={cfg.lpips}: use one of {', '.join(LPIPS_NETS)}, or lpips=null to leave it out")
    if cfg.get("baseline") is not None:
        check_baseline(cfg.baseline, overrides, multirun)
    check_model_and_devices(cfg)
    check_trace(cfg)
    check_writable_folder("outdir", absolute(cfg.outdir), shown=cfg.outdir)
    return cfg


__all__ = [
    "USAGE",
    "EVAL_USAGE",
    "check_command_line",
    "check_eval_command_line",
    "check_trace",
    "quote_value",
    "sweeps",
    "closest",
    "compose_checked",
    "config_groups",
    "is_single_image",
    "leaf_keys",
    "selectable_groups",
]
