"""The seed's comparison as one picture: a large mask, its first pyramid scale, and its second scale
with `pyramid_mask=blur` against `nearest`.

The masks are the pyramid's own levels (`OriginalPyramid.build`, the refiner's input), shown as
`trace=DIR` shows them: upscaled nearest to one display size (`lama_refine.app.trace`), so each
coarse pixel is a visible block. A zoom row shows the same corner of each at 1 coarse pixel = 4
display pixels, where a thin stroke survives blur and breaks up under nearest. The mask is one of
LaMa's `thin` family (seeded) at 1241x1755, half the notes' 2482x3509, to keep the run to
seconds; `pyramid.min_side=256` gives it the notes' three scales.

    python tools/make_trace_picture.py            # -> docs/images/trace-pyramid-mask.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lama_refine.app.trace import display_size
from lama_refine.parts.downsample import BlurMaskDownsampler, GaussianDownsampler, NearestMaskDownsampler
from lama_refine.parts.pyramid import OriginalPyramid
from lama_refine.train.mask_families import seeded_mask

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "trace-pyramid-mask.jpg"


def label_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def pyramid_masks(mask: np.ndarray, mask_downsampler) -> list[np.ndarray]:
    """The pyramid's masks, finest first, as bool arrays."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    image = m.expand(-1, 3, -1, -1).contiguous()  # the masks do not depend on the image
    levels = OriginalPyramid(GaussianDownsampler(), mask_downsampler, min_side=256, px_budget=None).build(image, m)
    return [level.mask[0, 0].numpy() > 0 for level in reversed(levels)]


def shown(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """White hole on black, upscaled nearest to `size` (h, w), as the trace's display files are."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).resize((size[1], size[0]), Image.NEAREST)


def zoom(mask: np.ndarray, box: tuple[int, int, int, int], factor: int, side: int) -> Image.Image:
    """The part of `mask` (a level `factor` times smaller than full size) inside `box` (y0, x0, y1, x1
    in full-size pixels), at `side` x `side`."""
    y0, x0, n = box[0] // factor, box[1] // factor, max(1, (box[2] - box[0]) // factor)
    return shown(mask[y0 : y0 + n, x0 : x0 + n], (side, side))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--size", type=int, nargs=2, default=(1755, 1241), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--family", default="thin", help="LaMa's mask family: thin strokes show the difference")
    args = parser.parse_args()
    h, w = args.size
    mask = seeded_mask(h, w, args.family, args.seed) > 0
    blur = pyramid_masks(mask, BlurMaskDownsampler())
    nearest = pyramid_masks(mask, NearestMaskDownsampler())
    assert len(blur) == 3 and np.array_equal(blur[0], nearest[0])
    panel = display_size((h, w), 420)
    panels = [
        (f"mask {w}x{h}", blur[0]),
        (f"scale 1 ({blur[1].shape[1]}x{blur[1].shape[0]}), blur", blur[1]),
        (f"scale 2 ({blur[2].shape[1]}x{blur[2].shape[0]}), blur", blur[2]),
        (f"scale 2 ({nearest[2].shape[1]}x{nearest[2].shape[0]}), nearest", nearest[2]),
    ]
    # the zoom: the full-size window where blur and nearest differ most at scale 2
    differ = np.kron(blur[2] != nearest[2], np.ones((4, 4), bool))[: h // 4 * 4, : w // 4 * 4]
    win = 160
    sums = np.add.reduceat(
        np.add.reduceat(differ, np.arange(0, differ.shape[0], win), 0), np.arange(0, differ.shape[1], win), 1
    )
    by, bx = np.unravel_index(np.argmax(sums), sums.shape)
    box = (by * win, bx * win, by * win + win, bx * win + win)
    side, gap, header = panel[1], 8, 22
    font = label_font(15)
    canvas = Image.new("RGB", (4 * side + 3 * gap, 2 * header + panel[0] + gap + side), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, m) in enumerate(panels):
        x = i * (side + gap)
        draw.text((x + 2, 3), title, fill="black", font=font)
        canvas.paste(shown(m, panel), (x, header))
        factor = {0: 1, 1: 2, 2: 4, 3: 4}[i]
        z = zoom(m, box, factor, side)
        y = 2 * header + panel[0] + gap
        draw.text((x + 2, y - header + 3), f"zoom {win}x{win} px at ({box[1]}, {box[0]})", fill="black", font=font)
        canvas.paste(z, (x, y))
        ry = header + round(box[0] * panel[0] / h)
        rx = x + round(box[1] * side / w)
        draw.rectangle(
            [rx, ry, rx + round(win * side / w), ry + round(win * panel[0] / h)], outline=(255, 40, 40), width=2
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, quality=85, optimize=True)
    print(f"{args.out}: {canvas.size[0]}x{canvas.size[1]}, {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
