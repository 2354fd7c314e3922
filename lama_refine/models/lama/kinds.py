"""LaMa's two generator kinds, registered with the generator protocol (how they are cut, the names
of their front's features, their bandable tail, the lean versions of their blocks), and building
one from a LaMa `generator:` config section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from lama_refine.models.lama.ffc import FFC_BN_ACT, ConcatTupleLayer, FFCResnetBlock, FFCResNetGenerator
from lama_refine.models.lama.fill import INPUT_FILLS
from lama_refine.models.lama.lean_blocks import LeanFFCResnetBlock, LeanResidual, lean_ffc_bn_act
from lama_refine.models.lama.pix2pixhd import GlobalGenerator, ResnetBlock
from lama_refine.models.protocol import GENERATOR_KINDS, register_block, register_generator, register_handler
from lama_refine.perf.tiling import find_tail

# Both take LaMa's input (the protocol's default, `hole_zeroed_and_mask`) and end with the decoder
# tail `tiling.TiledTail` bands; an FFC front emits a (local, global) pair, a branch without channels
# being the int 0 (the protocol's empty branch).
register_generator(
    FFCResNetGenerator, kind="ffc_resnet", blocks=(FFCResnetBlock,), front_emits=("local", "global"), tail=find_tail
)
register_generator(GlobalGenerator, kind="pix2pixhd_global", blocks=(ResnetBlock,), tail=find_tail)
register_block(FFCResnetBlock, ResnetBlock)

register_handler("lean", FFCResnetBlock, LeanFFCResnetBlock)
register_handler("lean", FFC_BN_ACT, lean_ffc_bn_act)
register_handler("lean", ResnetBlock, LeanResidual)
register_handler("lean", ConcatTupleLayer, lambda module: module)  # no parameters, nothing saved
register_block(LeanFFCResnetBlock, LeanResidual)  # still one trunk block each (perf.checkpointing)


def _ffc_local_convs(block: FFC_BN_ACT) -> list[nn.Module] | None:
    """An FFC block without a global input is a local op: its local-to-local and local-to-global
    convs (an FFC with a Fourier branch sees the whole image: not local)."""
    ffc = block.ffc
    if ffc.global_in_num != 0 or ffc.gated:
        return None
    return [c for c in (ffc.convl2l, ffc.convl2g) if isinstance(c, nn.Conv2d)]


register_handler("local_convs", FFC_BN_ACT, _ffc_local_convs)
for _fill in INPUT_FILLS.values():  # the input fill sees the whole image: tiling runs it before the bands
    register_handler("image_wide", _fill, lambda module: True)

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


__all__ = ["BIG_LAMA", "NON_LAMA_OPTIONS", "build_generator", "generator_config"]
