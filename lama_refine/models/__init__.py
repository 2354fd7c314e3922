"""LaMa generators, built from a LaMa `generator:` config section, and checkpoint loading."""
from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from torch import nn

from .ffc import FFCResNetGenerator, FFCResnetBlock
from .pix2pixhd import GlobalGenerator, ResnetBlock

GENERATOR_KINDS: dict[str, type[nn.Module]] = {
    "ffc_resnet": FFCResNetGenerator,
    "pix2pixhd_global": GlobalGenerator,
}
RESNET_BLOCK_TYPES: tuple[type[nn.Module], ...] = (FFCResnetBlock, ResnetBlock)

BIG_LAMA: dict[str, Any] = {
    "kind": "ffc_resnet",
    "input_nc": 4,
    "output_nc": 3,
    "ngf": 64,
    "n_downsampling": 3,
    "n_blocks": 18,
    "add_out_act": "sigmoid",
    "init_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False},
    "downsample_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False},
    "resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": False},
}

NON_LAMA_OPTIONS: dict[str, Any] = {"input_fill": None}
"""This project's generator options that LaMa's constructors do not have, each with the value
at which the generator is LaMa's own (so a section holding only these values is plain LaMa)."""


def generator_config(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A LaMa config (whole `config.yaml`, or its `generator:` section) -> plain generator dict.

    Interpolations such as `${generator.init_conv_kwargs.ratio_gout}` are resolved relative to
    the config root, as LaMa writes them; nothing outside the generator section is resolved
    (LaMa configs carry `${env:TORCH_HOME}` elsewhere, which modern OmegaConf cannot resolve).
    """
    root = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    if "generator" not in root:
        if "kind" not in root:
            raise ValueError("generator config has neither a `generator:` section nor a `kind:` key")
        root = OmegaConf.create({"generator": root})
    return OmegaConf.to_container(root.generator, resolve=True)  # type: ignore[return-value]


def build_generator(cfg: Mapping[str, Any] | DictConfig) -> nn.Module:
    """Build an untrained generator from a LaMa generator section (`kind` + constructor kwargs)."""
    kwargs = generator_config(cfg)
    kind = kwargs.pop("kind")
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"unsupported generator kind {kind!r}; supported: {sorted(GENERATOR_KINDS)}")
    try:
        return GENERATOR_KINDS[kind](**kwargs)
    except TypeError as error:  # e.g. an unknown keyword in the yaml: a config error, say so
        raise ValueError(f"invalid {kind!r} generator config {kwargs}: {error}") from error


def is_resnet_block(module: nn.Module) -> bool:
    """The trunk blocks the refinement splits the network at (SPEC 4.1)."""
    return isinstance(module, RESNET_BLOCK_TYPES)


# Imported last: loading.py builds generators through this module's registry.
from .loading import (  # noqa: E402
    CheckpointError,
    CheckpointMismatchError,
    LoadedGenerator,
    load_generator,
)

__all__ = [
    "BIG_LAMA",
    "CheckpointError",
    "CheckpointMismatchError",
    "FFCResNetGenerator",
    "GENERATOR_KINDS",
    "GlobalGenerator",
    "LoadedGenerator",
    "NON_LAMA_OPTIONS",
    "RESNET_BLOCK_TYPES",
    "ResnetBlock",
    "build_generator",
    "generator_config",
    "is_resnet_block",
    "load_generator",
]
