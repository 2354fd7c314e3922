"""Evaluate the built-in demo model on held-out photos; writes the model card's tables and pictures.

    python tools/evaluate_default_model.py [--weights lama_refine/weights/default.safetensors]
        [--out outputs/eval] [--images docs/images] [--long-side 1280] [--skip-highres]

1. 256 px crops with seeded thin / medium / thick masks: trained vs. untrained network vs.
   classical diffusion fill (hole L1 and PSNR).
2. The held-out photos at `--long-side` px, one seeded mask per family: plain vs. refined
   through the Inpainter with the original's defaults (15 iterations, min_side 512, ...).
3. The shipped examples (examples/NAME.jpg + NAME_mask.png): plain vs. refined, with timings.
Tables go to OUT/results.md and OUT/results.json; pictures to IMAGES/default-model-*.png.
Needs the held-out photos (fetched into ~/.cache/lama-refine/data with apt-get download).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from lama_refine.models import build_generator, generator_config  # noqa: E402
from lama_refine.models.loading import load_generator  # noqa: E402
from lama_refine.train import evaluate as ev  # noqa: E402
from lama_refine.train.data import HOLDOUT, load_photos, read_rgb8, to_tensor  # noqa: E402
from lama_refine.weights import DEFAULT_MODEL_PATH  # noqa: E402

EXAMPLES = ("boats", "forest", "ladybird")


def examples_section(generator, folder: Path, images_dir: Path) -> tuple[str, list[dict]]:
    """Plain vs refined on the shipped examples; the ladybird case becomes the side-by-side."""
    lines = [
        "| example | size | hole % | scales | plain L1 / PSNR | refined L1 / PSNR | plain s | refined s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    records = []
    for name in EXAMPLES:
        image = to_tensor(read_rgb8(folder / f"{name}.jpg"))[None]
        mask = torch.from_numpy((read_rgb8(folder / f"{name}_mask.png")[..., 0] > 0).astype(np.float32))[None, None]
        case = ev.highres_case(generator, image, mask)
        h, w = image.shape[-2:]
        lines.append(
            f"| {name} | {w}x{h} | {100 * float(mask.mean()):.1f} | {case['scales']} | "
            f"{case['plain_l1']:.4f} / {case['plain_psnr']:.2f} | "
            f"{case['refined_l1']:.4f} / {case['refined_psnr']:.2f} | "
            f"{case['plain_s']:.1f} | {case['refined_s']:.1f} |"
        )
        records.append({k: v for k, v in case.items() if not torch.is_tensor(v)} | {"example": name})
        picture = ev.highres_picture(image, mask, case["plain"], case["refined"])
        picture.save(images_dir / f"default-model-{name}.jpg", quality=88)
        print(lines[-1], flush=True)
    total = sum(r["plain_s"] + r["refined_s"] for r in records)
    lines.append("")
    lines.append(f"Total wall time, plain + refined, all examples: {total:.0f} s.")
    return "\n".join(lines), records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "eval")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--examples", type=Path, default=ROOT / "examples")
    parser.add_argument("--long-side", type=int, default=1280)
    parser.add_argument("--families-per-photo", type=int, default=1, help="1-3 seeded masks per held-out photo")
    parser.add_argument("--skip-highres", action="store_true", help="only the 256 px table and the examples")
    parser.add_argument("--skip-examples", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.images.mkdir(parents=True, exist_ok=True)

    trained = load_generator(args.weights).generator
    torch.manual_seed(0)
    untrained = build_generator(OmegaConf.load(args.weights.with_suffix(".yaml"))).eval()
    photos = load_photos(HOLDOUT, max_short_side=None)
    sections, payload = [], {"weights": str(args.weights), "holdout": list(HOLDOUT)}

    started = time.time()
    fills = {
        "trained (this model)": ev.network_fill(trained),
        "untrained (same network)": ev.network_fill(untrained),
        "diffusion fill (classical)": ev.diffusion_fill,
        "mean-colour fill (classical)": ev.mean_fill,
    }
    if generator_config(OmegaConf.load(args.weights.with_suffix(".yaml"))).get("input_fill") == "diffusion":
        # what the network sees in the hole: it improves on its input only if it beats this row
        fills["diffusion fill, 20 rounds (this model's input)"] = lambda x, m: ev.diffusion_fill(x, m, iters=20)
    rows, outputs = ev.crops_table(fills, photos)
    table = ev.crops_markdown(rows)
    print(table, flush=True)
    sections.append("## 256 px crops (hole L1, lower is better / hole PSNR dB, higher is better)\n\n" + table)
    payload["crops"] = rows
    n = len(outputs["input"])
    picks = [0, 1, 2, n // 2 + 3, n // 2 + 4, n // 2 + 5]
    ev.crops_picture(outputs, list(fills)[:3], picks, cell=168).save(
        args.images / "default-model-crops.jpg", quality=88
    )
    print(f"crops: {time.time() - started:.0f} s", flush=True)

    if not args.skip_highres:
        rows_hr, _ = ev.highres_table(trained, photos, args.long_side, args.families_per_photo)
        table = ev.highres_markdown(rows_hr) + "\n\nPer mask family:\n\n" + ev.family_markdown(rows_hr)
        print(table, flush=True)
        sections.append(f"## Held-out photos at {args.long_side} px: plain vs refined\n\n" + table)
        payload["highres"] = rows_hr
    if not args.skip_examples:
        table, records = examples_section(trained, args.examples, args.images)
        sections.append("## Shipped examples: plain vs refined\n\n" + table)
        payload["examples"] = records

    (args.out / "results.md").write_text("\n\n".join(sections) + "\n")
    ev.save_json(args.out / "results.json", payload)
    print(f"wrote {args.out / 'results.md'} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
