"""From a Hydra config to objects: the parts, the generator, the devices, the Inpainter."""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.utils import get_object, instantiate, to_absolute_path
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from torch import nn

from lama_refine.errors import UserError
from lama_refine.parts.downsample import Downsampler, MaskDownsampler
from lama_refine.parts.partition import DevicePartitioner
from lama_refine.parts.pyramid import PyramidBuilder
from lama_refine.parts.refine import Refiner
from lama_refine.perf.switches import PerfConfig
from lama_refine.pipeline import Inpainter
from lama_refine.region import CropConfig
from lama_refine.weights import DEFAULT_MODEL_PATH as DEFAULT_MODEL

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The config folder: `lama_refine/conf` when installed, the repository's `conf/` in a checkout."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"lama-refine's config folder is missing (looked in {PACKAGE_DIR}/conf and "
        f"{PACKAGE_DIR.parent}/conf); reinstall the package"
    )


def compose(overrides: Sequence[str] = (), config_name: str = "config", *, raw: bool = False) -> DictConfig:
    """The app's config with command-line style overrides, for use from Python and tests, read
    (`read_config`: `devices` settled) unless `raw` (the key checks compare against the yaml as written)."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    return cfg if raw else read_config(cfg)


def parse_gpu_ids(gpu_ids: str | int) -> list[torch.device]:
    """LaMa's `gpu_ids` string: spaces dropped, comma-separated, non-digit tokens ignored.

    `"0,1, 2"` -> cuda:0, cuda:1, cuda:2; `"0,"` -> cuda:0.
    """
    tokens = str(gpu_ids).replace(" ", "").split(",")
    devices = [torch.device(f"cuda:{t}") for t in tokens if t.isdigit()]
    if not devices:
        raise UserError(
            f"refiner.gpu_ids={gpu_ids!r} names no GPU; give GPU numbers, e.g. "
            "refiner.gpu_ids='0' or '0,1' (or devices=[cuda:0,cuda:1])"
        )
    return devices


DEVICE_HINT = (
    "use devices=cpu, devices=cuda (the first GPU), devices=cuda:1, devices=[cuda:0,cuda:1] or "
    "devices=mps; or leave devices unset for every visible GPU, else the CPU"
)


def _spelling(value: Any) -> str:
    """`devices` as the user wrote it on the command line."""
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _one_device(token: Any, shown: str) -> torch.device:
    text = str(token).strip().strip("'\"").lower()
    if isinstance(token, int) or text.isdigit():  # `devices=0`, `devices=[0,1]`: GPU numbers, as gpu_ids
        text = f"cuda:{text}"
    elif text == "gpu" or text.startswith("gpu:"):
        text = "cuda" + text[3:]
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UserError(f"devices={shown}: {str(token)!r} is not a device; {DEVICE_HINT}") from None
    return torch.device("cuda:0") if device.type == "cuda" and device.index is None else device


def _missing_device(device: torch.device) -> str | None:
    """Why `device` cannot be used on this machine, or None when it can."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            visible = f"{count} visible GPU{'' if count == 1 else 's'}" + (
                f": {', '.join(f'cuda:{i}' for i in range(count))}" if count else ""
            )
            return f"{device} is not available ({visible})"
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
        is_available = getattr(backend, "is_available", None)
        if is_available is None or not is_available():
            return f"{device.type} is not available on this machine"
    return None


def parse_devices(value: Any, gpu_ids: str | int | None = None, check: bool = False) -> list[str] | None:
    """The one reader of `devices` (and LaMa's `refiner.gpu_ids`, which wins over it): every
    spelling a user tries -> canonical names; None (unset) means every visible GPU, else the CPU
    (`device_list`). With `check`, each must exist on this machine.

    `cpu` and `[cpu]` are the same; `cuda` and `gpu` are the first GPU (`cuda:0`), `gpu:1` is
    `cuda:1`, a number is a GPU number, a comma-separated string is a list. A device that cannot be
    parsed (or, checked, is not there) is a UserError naming the value given."""
    if gpu_ids is not None:
        devices, shown = parse_gpu_ids(gpu_ids), f"refiner.gpu_ids={gpu_ids}"
        key = "refiner.gpu_ids"
    else:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none", "auto")):
            return None
        shown, key = _spelling(value), "devices"
        if isinstance(value, str):
            tokens: list[Any] = [t for t in value.strip().strip("[]").split(",") if t.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            tokens = [int(value)]
        elif isinstance(value, (list, tuple, ListConfig)):
            tokens = list(value)
        else:
            raise UserError(f"devices={shown}: expected a device or a list of them; {DEVICE_HINT}")
        if not tokens:
            raise UserError(f"devices={shown}: names no device; {DEVICE_HINT}")
        devices = [_one_device(t, shown) for t in tokens]
        shown = f"devices={shown}"
    for device in devices if check else ():
        why = _missing_device(device)
        if why is not None:
            hint = DEVICE_HINT if key == "devices" else "use devices=cpu, or leave devices and refiner.gpu_ids unset"
            raise UserError(f"{shown}: {why}; {hint}")
    return [str(d) for d in devices]


def device_list(devices: Sequence[str] | None) -> list[torch.device]:
    """The devices of a read config (`parse_devices`' names), each checked to be here: unset means
    every visible GPU, else the CPU."""
    if devices:
        return [torch.device(d) for d in parse_devices(list(devices), check=True) or ()]
    if torch.cuda.is_available():
        return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def read_config(cfg: DictConfig, check: bool = False) -> DictConfig:
    """The config as the rest of the package reads it, settled once where it is read (`compose`,
    the command-line and API check `overrides.compose_checked`, the Hydra apps' `main`): LaMa's
    `refiner.gpu_ids` moved into `devices` and removed, `devices` parsed (`parse_devices`) into a
    list of device names, or null for every visible GPU. After it, `devices` alone says where to
    run. `check`: the devices must be on this machine (else building the pipeline checks them)."""
    has_gpu_ids = "refiner" in cfg and isinstance(cfg.refiner, DictConfig) and "gpu_ids" in cfg.refiner
    if "devices" not in cfg and not has_gpu_ids:
        return cfg
    devices = parse_devices(cfg.get("devices"), cfg.refiner.gpu_ids if has_gpu_ids else None, check)
    cfg = cfg.copy()
    with open_dict(cfg):
        if has_gpu_ids:
            del cfg.refiner["gpu_ids"]
        cfg.devices = devices
    return cfg


def resolve_gpu_ids(cfg: DictConfig) -> DictConfig:
    """Deprecated name of `read_config` (it settles `devices` as well now), until 0.3."""
    warnings.warn("config.resolve_gpu_ids is config.read_config now", DeprecationWarning, stacklevel=2)
    return read_config(cfg)


def resolve_devices(devices: Sequence[str] | None, gpu_ids: str | int | None = None) -> list[torch.device]:
    """The devices to run on from any spelling (`parse_devices`), unset meaning every visible GPU,
    else the CPU. Asking for a device that is not there is an error, not a silent fallback."""
    return device_list(parse_devices(devices, gpu_ids, check=True))


def model_path(model_cfg: DictConfig | dict[str, Any]) -> Path:
    """`model.path` as an absolute path; null means the built-in demo model.

    A name that is no file or folder here is a built-in model (`demo`, `demo-fill`:
    lama_refine.weights) or a named model in the cache folder (`big-lama`, a name given to
    `lama-refine-download`; one not downloaded yet is a UserError that prints the download
    command): `models.zoo.lookup`."""
    from lama_refine.models import zoo

    path = model_cfg.get("path")
    if path in (None, "", "default"):
        return DEFAULT_MODEL
    return zoo.lookup(str(path), Path(to_absolute_path(str(path))))


def load_model(model_cfg: DictConfig | dict[str, Any]) -> nn.Module:
    """The generator named by the `model` config section, frozen, in eval mode, on the CPU.

    With `model._target_`, a generator class of your own (any refinable `nn.Module`,
    `models/protocol.py`) built with the section's other keys as arguments, its weights from
    `model.path` when given; else a LaMa checkpoint (`models.load_generator`)."""
    from lama_refine.models.loading import load_generator, load_weights

    if model_cfg.get("_target_"):
        plain = (
            cast("dict[str, Any]", OmegaConf.to_container(model_cfg, resolve=True))
            if isinstance(model_cfg, DictConfig)
            else dict(model_cfg)
        )
        generator = instantiate({k: v for k, v in plain.items() if k not in ("path", "checkpoint")})
        if not isinstance(generator, nn.Module):
            raise UserError(
                f"model._target_={model_cfg['_target_']} made a {type(generator).__name__}, not an "
                "nn.Module; name your generator class"
            )
        path = model_cfg.get("path")
        return load_weights(generator, to_absolute_path(str(path))) if path else generator.eval().requires_grad_(False)
    return load_generator(model_path(model_cfg), checkpoint=model_cfg.get("checkpoint", "best.ckpt")).generator


# Each part's contract: the base class it must be an instance of and the method it must have.
PART_CONTRACTS: dict[str, tuple[type, str]] = {
    "downsampler": (Downsampler, "forward"),
    "pyramid_mask": (MaskDownsampler, "forward"),
    "loss_mask": (MaskDownsampler, "forward"),
    "pyramid": (PyramidBuilder, "build"),
    "refiner": (Refiner, "refine"),
    "partitioner": (DevicePartitioner, "split"),
}


def declared(target: Any, available: dict[str, Any]) -> dict[str, Any]:
    """The shared objects of `available` that `target`'s constructor declares by name: a part
    gets only what it asks for. A subclass whose `__init__` forwards `**kwargs` declares what
    the constructors it forwards to declare."""
    names: set[str] = set()
    for cls in target.__mro__ if isinstance(target, type) else ():
        if cls in (object, nn.Module) or "__init__" not in vars(cls):
            continue
        params = _parameters(vars(cls)["__init__"])
        names |= set(params)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    if not isinstance(target, type):  # a factory function
        names = set(_parameters(target))
    return {k: v for k, v in available.items() if k in names}


def build_part(group: str, node: DictConfig, **available: Any) -> Any:
    """Instantiate the part of `group` from its config node, injecting the shared objects of
    `available` its class declares, and check it against `PART_CONTRACTS`: a part that breaks
    its contract fails here, naming its class and what is missing."""
    base, method = PART_CONTRACTS[group]
    target_name = node.get("_target_")
    if target_name is None:
        raise UserError(
            f"{group}: the config has no `_target_`; name the class, e.g. {group}._target_=my_module.MyPart"
        )
    try:
        target = get_object(str(target_name))
    except Exception as error:  # noqa: BLE001 - hydra raises ImportError or its own wrapper
        raise UserError(
            f"{group}: cannot import `_target_` {target_name} ({error}); check the module is on "
            "PYTHONPATH and the name is spelt as defined"
        ) from error
    kwargs = declared(target, available)
    required = [
        n
        for n, p in _parameters(target).items()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in node.keys()
        and n not in kwargs
    ]
    if required:
        raise UserError(
            f"{group}: {target_name} needs {', '.join(required)}, which neither its config gives nor "
            f"lama-refine injects (it injects {', '.join(available) or 'nothing'} here); set "
            f"{group}.{required[0]}=... or give it a default"
        )
    part = instantiate(node, **kwargs)
    check_part(group, part)
    return part


def _parameters(target: Any) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):  # no signature to read (a builtin): nothing declared
        return {}


def check_part(group: str, part: Any) -> None:
    """`part` is an instance of its group's base class and has the group's method."""
    base, method = PART_CONTRACTS[group]
    if not isinstance(part, base) or not callable(getattr(part, method, None)):
        raise UserError(
            f"{group}: {type(part).__module__}.{type(part).__qualname__} is not a {base.__name__}; "
            f"subclass {base.__module__}.{base.__name__} and implement `{method}` "
            "(docs/extending.md)"
        )


def build_parts(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate the pluggable parts: downsampler, pyramid (with its mask downsampler),
    refiner (with its loss-mask downsampler) and partitioner. Each part gets the shared
    downsamplers only where its constructor declares them (`downsampler`, `mask_downsampler`,
    `loss_mask_downsampler`). `cfg` is a read config (`read_config`)."""
    downsampler = build_part("downsampler", cfg.downsampler)
    return {
        "downsampler": downsampler,
        "pyramid": build_part(
            "pyramid",
            cfg.pyramid,
            downsampler=downsampler,
            mask_downsampler=build_part("pyramid_mask", cfg.pyramid_mask),
        ),
        "refiner": build_part(
            "refiner",
            cfg.refiner,
            downsampler=downsampler,
            loss_mask_downsampler=build_part("loss_mask", cfg.loss_mask),
        ),
        "partitioner": build_part("partitioner", cfg.partitioner),
    }


def perf_config(cfg: DictConfig) -> PerfConfig:
    """The `perf:` section (defaults where a config predates it)."""
    return PerfConfig.from_config(cfg.get("perf"))


def resolve_px_budget(
    cfg: DictConfig, generator: nn.Module, devices: Sequence[torch.device], perf: PerfConfig | None = None
) -> DictConfig:
    """`pyramid.px_budget=auto` -> the largest budget whose estimated peak fits the free memory
    of the last device (it holds the full-resolution decoder) (lama_refine.perf.memory); any other
    value is returned unchanged."""
    if str(cfg.pyramid.get("px_budget")) != "auto":
        return cfg
    from lama_refine.perf.memory import auto_px_budget

    budget = auto_px_budget(
        generator, perf or perf_config(cfg), devices[-1], max_scales=cfg.pyramid.get("max_scales", 3)
    )
    log.info("pyramid.px_budget=auto -> %d pixels on %s", budget, devices[-1])
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pyramid.px_budget = budget
    return cfg


def build_inpainter(cfg: DictConfig, generator: nn.Module | None = None) -> Inpainter:
    """The whole pipeline from a read app config (`read_config`); `generator` replaces the one `model` names."""
    if generator is None:
        generator = load_model(cfg.model)
    devices = device_list(cfg.devices)
    perf = perf_config(cfg)  # built once: the memory model and the pipeline read the same object
    cfg = resolve_px_budget(cfg, generator, devices, perf)
    parts = build_parts(cfg)
    return Inpainter(
        generator=generator,
        pyramid=parts["pyramid"],
        refiner=parts["refiner"],
        partitioner=parts["partitioner"],
        devices=devices,
        refine=cfg.refine,
        modulo=cfg.modulo,
        match_input_size=cfg.output.match_input_size,
        perf=perf,
        region=cfg.get("region", "whole"),
        crop=CropConfig(**dict(cfg.get("crop") or {})),
    )


__all__ = [
    "DEFAULT_MODEL",
    "build_inpainter",
    "PART_CONTRACTS",
    "build_part",
    "build_parts",
    "check_part",
    "compose",
    "conf_dir",
    "device_list",
    "load_model",
    "model_path",
    "parse_devices",
    "parse_gpu_ids",
    "perf_config",
    "read_config",
    "resolve_devices",
    "resolve_gpu_ids",
    "resolve_px_budget",
]
