"""Generators: the protocol any generator is refined through (protocol), checkpoint loading (loading,
convert, zoo) and LaMa's two kinds (lama/, registered when lama_refine is imported)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lama_refine.models.protocol import (
    GENERATOR_KINDS,
    GeneratorSpec,
    is_block,
    register_block,
    register_generator,
    register_handler,
    spec_of,
    trunk_bounds,
)

if TYPE_CHECKING:  # the names below, for type checkers; at run time __getattr__ loads them
    from lama_refine.models.lama.ffc import FFCResnetBlock, FFCResNetGenerator
    from lama_refine.models.lama.kinds import BIG_LAMA, NON_LAMA_OPTIONS, build_generator, generator_config
    from lama_refine.models.lama.pix2pixhd import GlobalGenerator, ResnetBlock
    from lama_refine.models.loading import CheckpointError, CheckpointMismatchError, LoadedGenerator, load_generator

# The rest load on first use: LaMa's modules build on perf's lean primitives, which ask this package's
# protocol, so importing them here would make `models` and `perf` import each other.
_LAZY = {
    "FFCResnetBlock": "lama_refine.models.lama.ffc",
    "FFCResNetGenerator": "lama_refine.models.lama.ffc",
    "BIG_LAMA": "lama_refine.models.lama.kinds",
    "NON_LAMA_OPTIONS": "lama_refine.models.lama.kinds",
    "build_generator": "lama_refine.models.lama.kinds",
    "generator_config": "lama_refine.models.lama.kinds",
    "GlobalGenerator": "lama_refine.models.lama.pix2pixhd",
    "ResnetBlock": "lama_refine.models.lama.pix2pixhd",
    "CheckpointError": "lama_refine.models.loading",
    "CheckpointMismatchError": "lama_refine.models.loading",
    "LoadedGenerator": "lama_refine.models.loading",
    "load_generator": "lama_refine.models.loading",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


__all__ = [
    "BIG_LAMA",
    "CheckpointError",
    "CheckpointMismatchError",
    "FFCResNetGenerator",
    "FFCResnetBlock",
    "GENERATOR_KINDS",
    "GeneratorSpec",
    "GlobalGenerator",
    "LoadedGenerator",
    "NON_LAMA_OPTIONS",
    "ResnetBlock",
    "build_generator",
    "generator_config",
    "is_block",
    "load_generator",
    "register_block",
    "register_generator",
    "register_handler",
    "spec_of",
    "trunk_bounds",
]
