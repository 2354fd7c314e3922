"""Generators: LaMa's two kinds, the protocol any generator is refined through, checkpoint loading."""

from __future__ import annotations

from lama_refine.models.lama.ffc import FFCResnetBlock, FFCResNetGenerator
from lama_refine.models.lama.kinds import BIG_LAMA, NON_LAMA_OPTIONS, build_generator, generator_config
from lama_refine.models.lama.pix2pixhd import GlobalGenerator, ResnetBlock
from lama_refine.models.loading import CheckpointError, CheckpointMismatchError, LoadedGenerator, load_generator
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
