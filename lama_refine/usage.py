"""What a user can get wrong before the first image is processed, found and said plainly.

`check_command_line(overrides)` composes the app's config from command-line overrides the way
Hydra will, and turns every mistake into one `UserError`: a message naming what is wrong and the
value given, with what to do (for an unknown key, the closest keys that exist). It is run before
Hydra starts, so that nothing (no log folder, no config save) happens on a command that cannot
work; Hydra's own messages ("To append to your config use +key=...") are for config authors.

The checks go from the command line inwards: overrides that parse, keys and group options that
exist, values of the type their default has, the parts' own argument checks, then the files:
inputs that exist, an output folder that can be written, a model file, the devices.
"""
from __future__ import annotations

import contextlib
import difflib
import errno
import math
import importlib.resources
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException, InstantiationException
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .batch import Shard, overwrite_mode
from .config import (build_parts, compose, conf_dir, model_path, perf_config, resolve_devices,
                     resolve_gpu_ids)
from .errors import UserError, describe_os_error
from .pipeline import REGIONS
from .region import CropConfig

USAGE = ("usage: lama-refine indir=DIR outdir=DIR [key=value ...]        inpaint a folder (photo.png + photo_mask*.png)\n"
         "       lama-refine image=FILE mask=FILE out=FILE [key=value ...] inpaint one image\n"
         "       model.path defaults to the built-in demo model; lama-refine --help lists every key")

# Groups that hold options for other groups rather than a choice of their own.
LIBRARY_GROUPS = {"mask_downsampler": ("pyramid_mask", "loss_mask")}

# Values a key takes besides ones of its default's type.
ALSO_ALLOWED: dict[str, tuple[Any, ...]] = {"pyramid.px_budget": ("auto",), "overwrite": ("never",)}

# Least values of numeric keys (a part checks its own arguments; these are the app's keys).
AT_LEAST: dict[str, float] = {"modulo": 1, "out_quality": 1, "mask.dilate": 0, "mask.threshold": 0,
                              "pyramid.px_budget": 1, "pyramid.min_side": 1, "pyramid.max_scales": 1,
                              "pyramid.n_scales": 1, "refiner.erosion_size": 0}
AT_MOST: dict[str, float] = {"out_quality": 100, "mask.threshold": 255}

_ABSENT = object()


# ---------------------------------------------------------------------------------------------
# Groups and keys
# ---------------------------------------------------------------------------------------------

def config_groups(*confs: Path) -> dict[str, list[str]]:
    """Every config group under the config folders (`refiner/optimizer` for nested ones) with
    its options, Hydra's own groups left out."""
    groups: dict[str, set[str]] = {}
    for conf in confs:
        for folder in sorted(p for p in conf.rglob("*") if p.is_dir()):
            name = folder.relative_to(conf).as_posix()
            options = {p.stem for p in folder.glob("*.yaml")}
            if options and not name.startswith("hydra"):
                groups.setdefault(name, set()).update(options)
    return {name: sorted(options) for name, options in sorted(groups.items())}


def search_path(parsed: list[Override]) -> list[Path]:
    """The config folders a command line composes from: the app's, then those it adds with
    `hydra.searchpath=[file://DIR,pkg://package.conf]` (a user's own parts, docs/extending.md)."""
    folders = [conf_dir()]
    for o in parsed:
        if o.key_or_group != "hydra.searchpath" or o.is_sweep_override():
            continue
        value = o.value()
        for entry in value if isinstance(value, list) else [value]:
            entry = str(entry)
            if entry.startswith("file://"):
                folders.append(absolute(entry[len("file://"):]))
            elif entry.startswith("pkg://"):
                with contextlib.suppress(ImportError, TypeError, ValueError):
                    folders.append(Path(str(importlib.resources.files(entry[len("pkg://"):]))))
    return [f for f in folders if f.is_dir()]


def selectable_groups(conf: Path) -> dict[str, list[str]]:
    """The groups a user picks an option of with `group=option`."""
    return {k: v for k, v in config_groups(conf).items() if k not in LIBRARY_GROUPS}


def leaf_keys(cfg: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config that holds a value (not a section)."""
    if isinstance(cfg, DictConfig):
        for key in cfg.keys():
            child = cfg._get_node(key)
            path = f"{prefix}{key}"
            if isinstance(child, DictConfig):
                yield from leaf_keys(child, path + ".")
            else:
                yield path


def closest(key: str, candidates: Sequence[str], n: int = 2) -> list[str]:
    """The candidates nearest `key`: first its siblings in the same section (`refiner.n_iter`
    finds `refiner.n_iters`), else by the last part alone (`n_iters` finds `refiner.n_iters`),
    else by the whole dotted path."""
    section, _, last = key.rpartition(".")
    siblings = {c.rpartition(".")[2]: c for c in candidates if c.rpartition(".")[0] == section}
    near = [siblings[t] for t in difflib.get_close_matches(last, list(siblings), n=n, cutoff=0.6)]
    if near:
        return near
    tails: dict[str, list[str]] = {}
    for c in candidates:
        tails.setdefault(c.rpartition(".")[2], []).append(c)
    by_tail = [c for t in difflib.get_close_matches(last, list(tails), n=n, cutoff=0.8) for c in tails[t]]
    whole = difflib.get_close_matches(key, candidates, n=n, cutoff=0.8)
    return list(dict.fromkeys(by_tail + whole))[:n]


def has_key(cfg: DictConfig, key: str) -> bool:
    """Whether the dotted key exists, set or not (`???` counts as there)."""
    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, DictConfig):
            if part not in node.keys():  # keys() lists `???` values too; `in` on the node would not
                return False
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return False
        if node is None:
            return False
    return True


def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException:
            hint = (f"; did you mean indir={text}?" if "=" not in text and not text.startswith("-")
                    else " (key=value, e.g. refiner.n_iters=5; quote values with spaces or commas)")
            raise UserError(f"cannot read {text!r} as an override{hint}") from None
    return parsed


def sweeps(overrides: Sequence[str], key: str) -> bool:
    """Whether the command line sweeps `key` (`--multirun key=a,b`)."""
    return any(o.key_or_group == key and o.is_sweep_override() for o in parse_overrides(overrides))


def is_group_override(o: Override, groups: dict[str, list[str]]) -> bool:
    return o.key_or_group.replace(".", "/") in groups or o.key_or_group in LIBRARY_GROUPS


def check_group_choice(o: Override, groups: dict[str, list[str]]) -> None:
    group = o.key_or_group.replace(".", "/")
    if group in LIBRARY_GROUPS:
        users = LIBRARY_GROUPS[group]
        value = o.value() if isinstance(o.value(), str) else "OPTION"
        raise UserError(f"{o.input_line}: {group} is not chosen by itself; pick the one of the pyramid with "
                        f"{users[0]}={value} and the one of the loss with {users[1]}={value} "
                        f"(options: {', '.join(groups[group])})")
    for value in choices(o):
        if value not in groups[group]:
            near = difflib.get_close_matches(str(value), groups[group], n=1)
            hint = f"; did you mean {group}={near[0]}?" if near else ""
            raise UserError(f"{o.input_line}: {group} has no option {value!r}{hint} "
                            f"(options: {', '.join(groups[group])})")


def choices(o: Override) -> list[Any]:
    """The values an override sets: one, or each value of a --multirun sweep."""
    if o.is_sweep_override():
        return list(o.sweep_string_iterator())
    return [o.value()]


def check_keys(parsed: list[Override], base: DictConfig, groups: dict[str, list[str]]) -> None:
    """Every `key=value` names a key that exists (`+key=value` adds one, `~key` deletes one)."""
    keys = list(leaf_keys(base))
    for o in parsed:
        if o.is_hydra_override() or is_group_override(o, groups) or o.type != OverrideType.CHANGE:
            continue
        key = o.key_or_group
        if has_key(base, key):
            continue
        near = closest(key, keys + list(groups))
        section = key.rpartition(".")[0]
        siblings = [k for k in keys if section and k.startswith(section + ".")]
        hint = (f"; did you mean {' or '.join(near)}?" if near else
                f" ({section} has {', '.join(siblings)})" if siblings else "")
        raise UserError(f"{o.input_line}: unknown key {key}{hint}")


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------

def expected_type(default: Any) -> tuple[tuple[type, ...], str] | None:
    if isinstance(default, bool):
        return (bool,), "true or false"
    if isinstance(default, int):
        return (int,), "a whole number"
    if isinstance(default, float):
        return (int, float), "a number"
    if isinstance(default, (list, ListConfig)):
        return (list,), "a list, e.g. [a,b]"
    return None


def check_types(cfg: DictConfig, defaults: DictConfig) -> None:
    """Each value has the type of its default (`refiner.n_iters=abc` is caught here, not deep in
    the refiner), with the alternatives in ALSO_ALLOWED; numeric keys within their bounds."""
    values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    default_values = OmegaConf.to_container(defaults, resolve=True, throw_on_missing=False)
    for key in leaf_keys(cfg):
        if key.startswith("hydra."):
            continue
        value, default = _get(values, key), _get(default_values, key)
        if default is _ABSENT or default is None or value is None or default == "???":
            continue
        if value in ALSO_ALLOWED.get(key, ()):
            continue
        expected = expected_type(default)
        if expected is not None:
            types, words = expected
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                others = "".join(f" or {v}" for v in ALSO_ALLOWED.get(key, ()))
                raise UserError(f"{key}={_show(value)}: expected {words}{others} (default {_show(default)})")
        if key in AT_LEAST and isinstance(value, (int, float)) and value < AT_LEAST[key]:
            raise UserError(f"{key}={_show(value)}: must be at least {AT_LEAST[key]:g}")
        if key in AT_MOST and isinstance(value, (int, float)) and value > AT_MOST[key]:
            raise UserError(f"{key}={_show(value)}: must be at most {AT_MOST[key]:g}")


def _get(container: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(container, dict) or part not in container:
            return _ABSENT
        container = container[part]
    return container


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if not isinstance(value, str) else (value if value else "''")


# ---------------------------------------------------------------------------------------------
# Files and folders
# ---------------------------------------------------------------------------------------------

def absolute(path: Any) -> Path:
    return Path(to_absolute_path(str(path)))


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

def compose_checked(overrides: Sequence[str], config_name: str = "config") -> tuple[DictConfig, DictConfig]:
    """The composed config (of `config_name`: `config` for lama-refine, `evaluate` for
    lama-refine-eval) and the defaults it is compared against (same group choices, no values
    changed); each mistake in the overrides as a UserError."""
    parsed = parse_overrides(overrides)
    groups = config_groups(*search_path(parsed))
    for o in parsed:
        if not o.is_hydra_override() and is_group_override(o, groups):
            check_group_choice(o, groups)
    first = [_first_value(o) for o in parsed]  # hydra.* too: hydra.searchpath adds config folders
    group_choices = [text for o, text in zip(parsed, first) if o.is_hydra_override() or is_group_override(o, groups)]
    base = _compose(group_choices, config_name)
    check_keys(parsed, base, groups)
    cfg = _compose(first, config_name)
    check_types(cfg, base)
    for o in parsed:  # every value of a sweep, one at a time
        if o.is_sweep_override() and not o.is_hydra_override() and not is_group_override(o, groups):
            for value in choices(o)[1:]:
                check_types(_compose([t for t in first if not t.startswith(o.key_or_group + "=")]
                                     + [f"{o.key_or_group}={value}"], config_name), base)
    return cfg, base


def _first_value(o: Override) -> str:
    prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}.get(o.type, "")
    if o.type == OverrideType.DEL and o.value() is None:
        return f"~{o.key_or_group}"
    value = choices(o)[0] if o.is_sweep_override() else o.get_value_element_as_str()
    return f"{prefix}{o.key_or_group}={value}"


def _compose(overrides: list[str], config_name: str = "config") -> DictConfig:
    try:
        return compose(overrides, config_name=config_name)
    except (HydraException, OmegaConfBaseException) as e:
        message = " ".join(str(e).split("\n")[:2]).strip()
        raise UserError(f"{message}") from None


def check_parts(cfg: DictConfig) -> None:
    """The parts build (their own argument checks: `refiner.n_iters=0`, an unknown optimiser
    argument added with `+`, ...), and the app's enumerations hold."""
    try:
        overwrite_mode(cfg.overwrite)
        Shard.parse(cfg.get("shard"))
        perf_config(cfg)
        CropConfig(**dict(cfg.get("crop") or {}))
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    if cfg.get("region", "whole") not in REGIONS:
        raise UserError(f"region={cfg.region}: expected one of {', '.join(REGIONS)}")
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
    try:
        resolve_devices(resolve_gpu_ids(cfg).devices)
    except ValueError as e:
        gpu_ids = cfg.refiner.get("gpu_ids")
        shown = (f"refiner.gpu_ids={gpu_ids}" if gpu_ids is not None else
                 f"devices=[{','.join(map(str, cfg.devices))}]" if cfg.devices else "devices unset")
        raise UserError(f"{shown}: {e}; use devices=[cpu], or leave devices and refiner.gpu_ids unset to use "
                        "every visible GPU, else the CPU") from None


def check_command_line(overrides: Sequence[str], output_suffixes: Sequence[str]) -> DictConfig:
    """The config `overrides` compose to, checked end to end (see the module's docstring)."""
    cfg, _ = compose_checked(overrides)
    check_parts(cfg)
    single = is_single_image(cfg)
    if single:
        check_single_image(cfg, output_suffixes)
    else:
        if cfg.out_ext.lower() not in output_suffixes:
            raise UserError(f"out_ext={cfg.out_ext}: use one of {', '.join(output_suffixes)}")
        check_folders(cfg)
    check_model_and_devices(cfg)
    # last: it makes the output folder, which a command that fails on anything else must not leave
    if single:
        check_writable_folder("out", absolute(cfg.out).parent, shown=Path(str(cfg.out)).parent)
    else:
        check_writable_folder("outdir", absolute(cfg.outdir), shown=cfg.outdir)
    return cfg


# ---------------------------------------------------------------------------------------------
# lama-refine-eval: the same checks on its config (`conf/evaluate.yaml`, which holds lama-refine's)
# ---------------------------------------------------------------------------------------------

EVAL_USAGE = ("usage: lama-refine-eval gt_dir=DIR outdir=DIR [mask_dir=DIR | masks.family=thin|medium|thick] "
              "[key=value ...]\n"
              "       lama-refine-eval --multirun gt_dir=DIR outdir=DIR refine=false,true [baseline=SETTING] ...\n"
              "       every key of lama-refine applies too; lama-refine-eval --help lists them")

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
        raise UserError(f"baseline={baseline}: names the setting a --multirun sweep is compared with; "
                        "add --multirun and sweep a key (e.g. refine=false,true)")
    swept = {o.key_or_group: len(choices(o)) for o in parse_overrides(overrides)
             if o.is_sweep_override() and not o.is_hydra_override()}
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        jobs = math.prod(swept.values())
        if not 0 <= baseline < jobs:
            raise UserError(f"baseline={baseline}: this sweep has jobs 0-{jobs - 1}")
        return
    for part in str(baseline).split(","):
        key = part.partition("=")[0].strip()
        if key not in swept:
            raise UserError(f"baseline={baseline}: {key} is not a key this sweep varies "
                            f"({', '.join(swept) or 'none'}); name a setting as its folder is named, "
                            f"e.g. baseline={next(iter(swept), 'refine')}=VALUE")


def check_eval_command_line(overrides: Sequence[str], multirun: bool = False) -> DictConfig:
    """lama-refine-eval's config checked as lama-refine's is (`check_command_line`): the same
    keys, types, parts, model and devices, then its own inputs and outputs."""
    cfg, _ = compose_checked(overrides, config_name="evaluate")
    check_parts(cfg)
    missing = [k for k in ("gt_dir", "outdir") if not given(cfg, k)]
    if missing:
        raise UserError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: "
                        "gt_dir=DIR (the ground-truth photos) outdir=DIR (where the tables and pictures go)")
    gt_dir = absolute(cfg.gt_dir)
    if not gt_dir.exists():
        raise UserError(f"gt_dir={cfg.gt_dir}: no such folder")
    if not gt_dir.is_dir():
        raise UserError(f"gt_dir={cfg.gt_dir}: is a file; give the folder of ground-truth photos")
    mask_dir = cfg.get("mask_dir")
    if mask_dir and not absolute(mask_dir).is_dir():
        raise UserError(f"mask_dir={mask_dir}: no such folder; leave it unset to use the *_mask*.png beside the "
                        "photos, else generated masks")
    from .train.masks import FAMILIES

    if cfg.masks.family not in FAMILIES:
        raise UserError(f"masks.family={cfg.masks.family}: use one of {', '.join(sorted(FAMILIES))}")
    if cfg.get("lpips") is not None and cfg.lpips not in LPIPS_NETS:
        raise UserError(f"lpips={cfg.lpips}: use one of {', '.join(LPIPS_NETS)}, or lpips=null to leave it out")
    if cfg.get("baseline") is not None:
        check_baseline(cfg.baseline, overrides, multirun)
    check_model_and_devices(cfg)
    check_writable_folder("outdir", absolute(cfg.outdir), shown=cfg.outdir)
    return cfg


__all__ = ["USAGE", "EVAL_USAGE", "check_command_line", "check_eval_command_line", "quote_value",
           "sweeps", "closest", "compose_checked", "config_groups", "is_single_image",
           "leaf_keys", "selectable_groups"]
