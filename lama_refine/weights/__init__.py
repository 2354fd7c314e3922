"""The built-in demo model (docs/default-model.md): a small FFC ResNet generator trained by
`python -m lama_refine.train` on openly licensed photos. Not a big-lama replacement.

`default.safetensors` holds fp16 weights and eval-mode BatchNorm statistics; `default.yaml`
beside it holds the LaMa `generator:` section, which `load_generator` reads for a safetensors file.
"""
from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_PATH = WEIGHTS_DIR / "default.safetensors"
DEFAULT_CONFIG_PATH = WEIGHTS_DIR / "default.yaml"

__all__ = ["DEFAULT_CONFIG_PATH", "DEFAULT_MODEL_PATH", "WEIGHTS_DIR"]
