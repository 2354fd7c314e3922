"""The built-in models (docs/default-model.md): small LaMa generators (Fourier-convolution ResNets) trained by
`python -m lama_refine.train` on openly licensed photos. Not big-lama replacements.

- `demo` (`default.safetensors`, the default `model.path`): a plain LaMa generator (zeros in the
  hole, LaMa's own `generator:` options only), on which feature refinement beats plain inference
  at 1-2 K px; LaMa's code loads it (`lama-refine-convert ... --to lama-experiment`).
- `demo-fill` (`demo-fill.safetensors`): the same network fed a diffusion fill in the hole
  (`input_fill: diffusion`, not a LaMa option): the better plain fill, which refinement does not
  improve.

Each `.safetensors` holds fp16 weights and eval-mode BatchNorm statistics; the `.yaml` of the
same stem beside it holds the LaMa `generator:` section, which `load_generator` reads.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_PATH = WEIGHTS_DIR / "default.safetensors"
DEFAULT_CONFIG_PATH = WEIGHTS_DIR / "default.yaml"
# model.path=NAME -> the shipped file (a file or folder of that name in the working directory wins)
BUILTIN_MODELS: dict[str, Path] = {
    "demo": DEFAULT_MODEL_PATH,
    "demo-fill": WEIGHTS_DIR / "demo-fill.safetensors",
}

__all__ = ["BUILTIN_MODELS", "DEFAULT_CONFIG_PATH", "DEFAULT_MODEL_PATH", "WEIGHTS_DIR"]
