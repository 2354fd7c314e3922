"""`lama-refine-convert SRC DST.safetensors`: any supported checkpoint -> safetensors + yaml.

The result loads without unpickling anything and carries its architecture twice: in
`DST.yaml` (a `generator:` section, readable and editable) and as JSON in the safetensors
metadata (`lama_refine.generator`), so the file alone is enough.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf
from safetensors.torch import save_file

from lama_refine.io.write import write_atomic
from lama_refine.models import zoo
from lama_refine.models.loading import SAFETENSORS_CONFIG_KEY, load_generator


def convert(src: str | Path, dst: str | Path, checkpoint: str = "best.ckpt") -> Path:
    """Write `dst` (.safetensors) and `dst` with suffix .yaml from the checkpoint at `src`."""
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise ValueError(f"{dst}: the destination must end in .safetensors")
    loaded = load_generator(src, checkpoint=checkpoint, map_location="cpu")
    state = {k: v.detach().cpu().contiguous() for k, v in loaded.generator.state_dict().items()}
    metadata = {SAFETENSORS_CONFIG_KEY: json.dumps(loaded.config)}
    yaml_text = OmegaConf.to_yaml({"generator": loaded.config})

    write_atomic(dst, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    write_atomic(dst.with_suffix(".yaml"), lambda tmp: tmp.write_text(yaml_text, encoding="utf-8"))
    return dst


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="lama-refine-convert",
        description="Convert a LaMa checkpoint (experiment folder, .ckpt, TorchScript .pt, "
        "state dict or safetensors) to DST.safetensors plus DST.yaml, or (--to "
        "lama-experiment) any of those to a LaMa experiment folder DST "
        "(config.yaml + models/best.ckpt) that LaMa's own bin/predict.py loads.",
    )
    parser.add_argument(
        "src",
        type=Path,
        help="checkpoint file, LaMa experiment folder, or a model name (demo, demo-fill, a downloaded one)",
    )
    parser.add_argument(
        "dst",
        type=Path,
        help="output .safetensors path (the .yaml goes beside it), or the experiment folder with --to lama-experiment",
    )
    parser.add_argument(
        "--to",
        choices=("safetensors", "lama-experiment"),
        default="safetensors",
        help="what to write (default: safetensors)",
    )
    parser.add_argument(
        "--checkpoint",
        default="best.ckpt",
        help="file in <experiment>/models/ when SRC is a folder (default: best.ckpt)",
    )
    args = parser.parse_args(argv)
    try:
        args.src = zoo.lookup(str(args.src), args.src)  # a model name: built-in (demo, demo-fill) or downloaded
        if args.to == "lama-experiment":
            from lama_refine.models.lama.export import CHECKPOINT_NAME, export_lama_experiment

            written = export_lama_experiment(args.src, args.dst, checkpoint=args.checkpoint)
            report = f"wrote {written / 'config.yaml'} and {written / 'models' / CHECKPOINT_NAME}"
        else:
            written = convert(args.src, args.dst, checkpoint=args.checkpoint)
            report = f"wrote {written} and {written.with_suffix('.yaml')}"
    except (OSError, ValueError) as error:  # CheckpointError and UserError are ValueErrors
        parser.exit(1, f"lama-refine-convert: error: {error}\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
