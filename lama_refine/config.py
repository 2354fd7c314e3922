"""From a Hydra config to objects: the parts, the generator, the devices, the Inpainter."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, open_dict
from torch import nn

from .perf import PerfConfig
from .pipeline import Inpainter
from .region import CropConfig
from .weights import DEFAULT_MODEL_PATH as DEFAULT_MODEL

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The config folder: `lama_refine/conf` when installed, the repository's `conf/` in a checkout."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"lama-refine's config folder is missing (looked in {PACKAGE_DIR}/conf and "
                            f"{PACKAGE_DIR.parent}/conf); reinstall the package")


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """The app's config with command-line style overrides, for use from Python and tests."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def parse_gpu_ids(gpu_ids: str | int) -> list[torch.device]:
    """LaMa's `gpu_ids` string: spaces dropped, comma-separated, non-digit tokens ignored.

    `"0,1, 2"` -> cuda:0, cuda:1, cuda:2; `"0,"` -> cuda:0.
    """
    tokens = str(gpu_ids).replace(" ", "").split(",")
    devices = [torch.device(f"cuda:{t}") for t in tokens if t.isdigit()]
    if not devices:
        raise ValueError(f"gpu_ids={gpu_ids!r} names no GPU (expected e.g. '0' or '0,1')")
    return devices


def resolve_devices(devices: Sequence[str] | None, gpu_ids: str | int | None = None) -> list[torch.device]:
    """The devices to run on: LaMa's `gpu_ids` if given, else `devices`, else every visible GPU,
    else the CPU. Asking for a GPU that is not there is an error, not a silent fallback."""
    if gpu_ids is not None:
        resolved = parse_gpu_ids(gpu_ids)
    elif devices:
        resolved = [torch.device(str(d)) for d in devices]
    elif torch.cuda.is_available():
        resolved = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    else:
        resolved = [torch.device("cpu")]
    for device in resolved:
        if device.type == "cuda":
            index = device.index or 0
            if not torch.cuda.is_available() or index >= torch.cuda.device_count():
                raise ValueError(f"device {device} is not available (visible GPUs: "
                                 f"{torch.cuda.device_count() if torch.cuda.is_available() else 0})")
    return resolved


def model_path(model_cfg: DictConfig | dict[str, Any]) -> Path:
    """`model.path` as an absolute path; null means the built-in demo model.

    A bare name that is no file or folder here (`big-lama`, a name given to
    `lama-refine-download`) is a named model in the cache folder (lama_refine.models.zoo); one
    not downloaded yet is a UserError that prints the download command. A missing `x.ckpt` and
    the like stays a path, so its error is about the file."""
    from .models import zoo

    path = model_cfg.get("path")
    if path in (None, "", "default"):
        return DEFAULT_MODEL
    value = str(path)
    resolved = Path(to_absolute_path(value))
    if zoo.is_name(value) and not resolved.exists() and (
            zoo.is_known_or_recorded(value) or Path(value).suffix.lower() not in zoo.CHECKPOINT_SUFFIXES):
        return zoo.resolve(value)
    return resolved


def load_model(model_cfg: DictConfig | dict[str, Any]) -> nn.Module:
    """The generator named by the `model` config section, frozen, in eval mode, on the CPU."""
    from .models.loading import load_generator

    return load_generator(model_path(model_cfg), checkpoint=model_cfg.get("checkpoint", "best.ckpt")).generator


def build_parts(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate the pluggable parts: downsampler, pyramid (with its mask downsampler),
    refiner (with its loss-mask downsampler) and partitioner."""
    downsampler = instantiate(cfg.downsampler)
    refiner_cfg = cfg.refiner.copy()
    with open_dict(refiner_cfg):
        refiner_cfg.pop("gpu_ids", None)  # LaMa's spelling of devices, not a refiner argument
    return {
        "downsampler": downsampler,
        "pyramid": instantiate(cfg.pyramid, downsampler=downsampler, mask_downsampler=instantiate(cfg.pyramid_mask)),
        "refiner": instantiate(refiner_cfg, downsampler=downsampler, loss_mask_downsampler=instantiate(cfg.loss_mask)),
        "partitioner": instantiate(cfg.partitioner),
    }


def perf_config(cfg: DictConfig) -> PerfConfig:
    """The `perf:` section (defaults where a config predates it)."""
    return PerfConfig.from_config(cfg.get("perf"))


def resolve_px_budget(cfg: DictConfig, generator: nn.Module, devices: Sequence[torch.device]) -> DictConfig:
    """`pyramid.px_budget=auto` -> the largest budget whose estimated peak fits the free memory
    of the last device (it holds the full-resolution decoder) (lama_refine.memory); any other value is returned unchanged."""
    if str(cfg.pyramid.get("px_budget")) != "auto":
        return cfg
    from .memory import auto_px_budget

    budget = auto_px_budget(generator, perf_config(cfg), devices[-1], max_scales=cfg.pyramid.get("max_scales", 3))
    log.info("pyramid.px_budget=auto -> %d pixels on %s", budget, devices[-1])
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pyramid.px_budget = budget
    return cfg


def build_inpainter(cfg: DictConfig, generator: nn.Module | None = None) -> Inpainter:
    """The whole pipeline from the app config; `generator` replaces the one `model` names."""
    if generator is None:
        generator = load_model(cfg.model)
    devices = resolve_devices(cfg.devices, cfg.refiner.get("gpu_ids"))
    cfg = resolve_px_budget(cfg, generator, devices)
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
        perf=perf_config(cfg),
        region=cfg.get("region", "whole"),
        crop=CropConfig(**dict(cfg.get("crop") or {})),
    )


__all__ = [
    "DEFAULT_MODEL",
    "build_inpainter",
    "build_parts",
    "compose",
    "conf_dir",
    "load_model",
    "model_path",
    "parse_gpu_ids",
    "perf_config",
    "resolve_devices",
    "resolve_px_budget",
]
