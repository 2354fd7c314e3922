"""Rebuild `examples/` from the held-out photos (never trained on): images and their masks.

    python tools/make_examples.py [--out examples]

The photos come from the Debian packages the training data uses (fetched into the cache if
missing, see lama_refine/train/data.py); each is resized with Lanczos and saved as JPEG
quality 92. Masks are 8-bit PNGs, 255 = hole: an object-sized blob (posts in the water), thin
LaMa strokes (seeded, resolution-relative) and a large box. Sizes are chosen so the default
pyramid (min_side 512, max_scales 3, px_budget 1.8 MP) uses 2 scales.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lama_refine.train.data import load_named_photo
from lama_refine.train.mask_families import seeded_mask

# name: (held-out photo, size (w, h))
EXAMPLES = {
    "boats": ("plasma/EveningGlow", (1280, 800)),
    "forest": ("plasma/Path", (1200, 750)),
    "ladybird": ("mate/LadyBird", (1280, 800)),
}
THIN_SEED = 24  # a draw with ~15 % coverage (the family averages 33 %)


def blob_mask(w: int, h: int) -> np.ndarray:
    """The wooden posts standing in the lake of `boats` (coordinates relative to the image)."""
    canvas = Image.new("L", (w, h), 0)
    points = [(0.612, 0.385), (0.735, 0.378), (0.742, 0.445), (0.690, 0.452), (0.612, 0.447)]
    ImageDraw.Draw(canvas).polygon([(x * w, y * h) for x, y in points], fill=255)
    canvas = canvas.filter(ImageFilter.MaxFilter(9))  # a margin around the object, as users draw
    return np.asarray(canvas)


def box_mask(w: int, h: int) -> np.ndarray:
    """A large box (about 15 % of the image) over the stem and the blurred flowers of `ladybird`."""
    mask = np.zeros((h, w), np.uint8)
    mask[int(0.56 * h) : int(0.94 * h), int(0.56 * w) : int(0.88 * w)] = 255
    return mask


def make(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, (photo, size) in EXAMPLES.items():
        image = Image.fromarray(load_named_photo(photo)).resize(size, Image.LANCZOS)
        image.save(out / f"{name}.jpg", quality=92)
        w, h = size
        if name == "boats":
            mask = blob_mask(w, h)
        elif name == "forest":
            mask = (seeded_mask(h, w, "thin", THIN_SEED) * 255).astype(np.uint8)
        else:
            mask = box_mask(w, h)
        Image.fromarray(mask).save(out / f"{name}_mask.png")
        print(f"{name}: {photo} {w}x{h}, hole {100 * (mask > 0).mean():.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples")
    make(parser.parse_args().out)


if __name__ == "__main__":
    main()
