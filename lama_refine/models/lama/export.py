"""Write a LaMa experiment folder from any model file this package loads.

`export_lama_experiment(src, out_dir)` writes what LaMa's own `bin/predict.py` reads:

* `out_dir/config.yaml`: a LaMa training config holding the sections LaMa's `load_checkpoint`
  and `make_training_model` read in predict mode (`training_model`, `trainer.kwargs`,
  `visualizer`, which predict.py switches to `noop`) and the model's `generator:` section;
* `out_dir/models/best.ckpt`: a Lightning-style checkpoint dict (`state_dict` with
  `generator.*` keys, the config as `hyper_parameters`), holding only plain data and tensors,
  so that `torch.load(weights_only=True)` (ours) reads it as well as LaMa's plain `torch.load`.

A generator with options LaMa's constructors do not have (`input_fill: diffusion`) is refused:
LaMa would build a different network from the same section, or none at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from lama_refine.errors import UserError
from lama_refine.io import write_atomic
from lama_refine.models import NON_LAMA_OPTIONS
from lama_refine.models.loading import load_generator

CHECKPOINT_NAME = "best.ckpt"

# The Lightning release LaMa pins; its checkpoints have this layout (and LaMa reads no more of it).
_LAMA_LIGHTNING_VERSION = "1.2.9"


def lama_generator_section(config: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """The generator config as a plain LaMa section: our options at their LaMa values are left
    out; any other value of them is a `UserError` naming the option and the way out."""
    section = dict(config)
    for key, lama_value in NON_LAMA_OPTIONS.items():
        if key not in section:
            continue
        if section[key] != lama_value:
            raise UserError(
                f"{source}: cannot export to a LaMa experiment: its generator has "
                f"`{key}: {section[key]}`, an option of this package that LaMa's generators do not "
                f"have (LaMa feeds zeros in the hole). Export a model trained with "
                f"`model.{key}={'null' if lama_value is None else lama_value}` instead, or convert "
                f"this one to .safetensors (lama-refine-convert SRC DST.safetensors)."
            )
        del section[key]
    return section


def lama_training_config(generator: dict[str, Any], run_title: str) -> dict[str, Any]:
    """The LaMa config sections predict-mode loading reads, around `generator`."""
    return {
        "run_title": run_title,
        "training_model": {
            "kind": "default",  # DefaultInpaintingTrainingModule: cat(image * (1 - mask), mask)
            "visualize_each_iters": 1000,
            "concat_mask": True,
            "store_discr_outputs_for_vis": True,
        },
        "visualizer": {"kind": "noop"},
        "generator": generator,
        "trainer": {"kwargs": {"accelerator": None}},  # make_training_model asks it for `use_ddp`
    }


def export_lama_experiment(src: str | Path, out_dir: str | Path, checkpoint: str = CHECKPOINT_NAME) -> Path:
    """Write `out_dir/config.yaml` and `out_dir/models/best.ckpt` from the model at `src`
    (any format `load_generator` reads; `checkpoint` names the file when `src` is a folder)."""
    out_dir = Path(out_dir)
    loaded = load_generator(src, checkpoint=checkpoint, map_location="cpu")
    section = lama_generator_section(loaded.config, src)
    config = lama_training_config(section, run_title=Path(src).stem)
    state = {f"generator.{k}": _lama_dtype(v) for k, v in loaded.generator.state_dict().items()}
    ckpt = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": _LAMA_LIGHTNING_VERSION,
        "state_dict": state,
        "hyper_parameters": config,
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    yaml_text = OmegaConf.to_yaml(OmegaConf.create(config))
    write_atomic(out_dir / "config.yaml", lambda tmp: tmp.write_text(yaml_text, encoding="utf-8"))
    write_atomic(out_dir / "models" / CHECKPOINT_NAME, lambda tmp: torch.save(ckpt, tmp))
    return out_dir


def _lama_dtype(tensor: torch.Tensor) -> torch.Tensor:
    """LaMa's weights are float32 (fp16 files were upcast on load, so the values are exact)."""
    tensor = tensor.detach().cpu().contiguous()
    return tensor.float() if tensor.is_floating_point() else tensor


__all__ = ["CHECKPOINT_NAME", "export_lama_experiment", "lama_generator_section", "lama_training_config"]
