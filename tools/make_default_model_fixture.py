"""Regenerate tests/fixtures/default-model/ after the built-in model is retrained.

    python tools/make_default_model_fixture.py

Writes a 128x128 crop (a 256 px region, halved) of a held-out example photo (`image.png`), a seeded LaMa "medium" mask
(`mask.png`, 255 = hole), the shipped model's plain output on it (`plain.npy`, float32
HxWx3 in [0, 1]) and `meta.json` (where the crop comes from, the masked L1 of the trained and
of a freshly initialised network). `tests/models/test_default_model.py` compares against them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lama_refine.models import build_generator  # noqa: E402
from lama_refine.models.loading import load_generator  # noqa: E402
from lama_refine.pipeline import plain_inpaint  # noqa: E402
from lama_refine.train.losses import masked_l1  # noqa: E402
from lama_refine.train.mask_families import seeded_mask  # noqa: E402
from lama_refine.weights import DEFAULT_MODEL_PATH  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "default-model"
SOURCE = ROOT / "examples" / "ladybird.jpg"
TOP, LEFT, REGION, SIZE = 288, 768, 256, 128  # the ladybird on its stem, 256 px region shrunk to 128
MASK_FAMILY, MASK_SEED = "medium", 8  # a draw covering ~22 % of the crop


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    photo = np.asarray(Image.open(SOURCE).convert("RGB"))
    region = Image.fromarray(photo[TOP : TOP + REGION, LEFT : LEFT + REGION])
    crop = np.asarray(region.resize((SIZE, SIZE), Image.LANCZOS))
    Image.fromarray(crop).save(OUT / "image.png")
    mask = (seeded_mask(SIZE, SIZE, MASK_FAMILY, MASK_SEED) * 255).astype(np.uint8)
    Image.fromarray(mask).save(OUT / "mask.png")

    image = torch.from_numpy(crop.astype(np.float32) / 255).permute(2, 0, 1)[None]
    hole = torch.from_numpy((mask > 0).astype(np.float32))[None, None]
    trained = load_generator(DEFAULT_MODEL_PATH).generator
    out = plain_inpaint(trained, image, hole)
    np.save(OUT / "plain.npy", out[0].permute(1, 2, 0).numpy().astype(np.float32))
    torch.manual_seed(0)
    untrained = build_generator(OmegaConf.load(DEFAULT_MODEL_PATH.with_suffix(".yaml"))).eval()
    meta = {
        "source": f"examples/ladybird.jpg[{TOP}:{TOP + REGION}, {LEFT}:{LEFT + REGION}], Lanczos to {SIZE}",
        "mask": f"seeded_mask({SIZE}, {SIZE}, {MASK_FAMILY!r}, {MASK_SEED})",
        "hole_fraction": float(hole.mean()),
        "weights_sha256": hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest(),
        "trained_hole_l1": float(masked_l1(out, image, hole)),
        "untrained_hole_l1": float(masked_l1(plain_inpaint(untrained, image, hole), image, hole)),
        "torch": torch.__version__,
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
