"""Make README's picture: the built-in examples with the built-in demo model, plain and refined.

    nice python tools/make_readme_strip.py [--out docs/images/strip.jpg] [--reuse]

One row per example of `examples/`; columns: the input with its hole tinted red, plain LaMa
(`refine=false`) and the refinement (the defaults), all three the same crop around the hole
(the whole photo where the hole spans it), so the difference is visible at README size. The
model is the small demo network shipped in the package (docs/default-model.md), not big-lama,
and the picture says so. The full-size results go to `outputs/readme-strip/` (`--reuse` takes
them from there instead of inpainting again, to re-lay the picture). A few minutes on a CPU.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lama_refine import make_inpainter, read_image, read_mask
from lama_refine.io import find_jobs, to_hwc, to_uint8

REPO = Path(__file__).resolve().parents[1]
PANEL = (400, 250)  # each panel's size in the picture (the examples are 16:10)
GAP, HEADER, FOOTER = 6, 30, 26
TINT = np.array([255, 40, 40], np.float32)


def hole_crop(mask: np.ndarray, aspect: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom): the hole's bounding box with as much context again around it,
    widened to `aspect` (w / h) and kept inside the image."""
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    ch, cw = max(2 * (bottom - top), h / 3), max(2 * (right - left), w / 3)
    ch, cw = max(ch, cw / aspect), max(cw, ch * aspect)  # widen the short way to the aspect
    if cw > w:
        ch, cw = w / aspect, w
    if ch > h:
        ch, cw = h, h * aspect
    cy, cx = (top + bottom) / 2, (left + right) / 2
    y0 = int(round(min(max(cy - ch / 2, 0), h - ch)))
    x0 = int(round(min(max(cx - cw / 2, 0), w - cw)))
    return x0, y0, x0 + int(round(cw)), y0 + int(round(ch))


def tinted(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The input with its hole shown: the hole's pixels blended half-way to red."""
    holes = mask[..., None].astype(np.float32)
    return (image * (1 - 0.55 * holes) + TINT * 0.55 * holes).round().astype(np.uint8)


def inpaint_examples(examples: Path, cache: Path, reuse: bool) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """-> (name, image, mask, plain, refined) per example, as uint8 HxWx3 (mask HxW bool)."""
    cache.mkdir(parents=True, exist_ok=True)
    inpainters = {}
    rows = []
    for job in find_jobs(examples):
        name = job.image.stem
        image_t, mask_t = read_image(job.image), read_mask(job.mask)
        results = []
        for kind, overrides in (("plain", ["refine=false"]), ("refined", [])):
            saved = cache / f"{name}-{kind}.png"
            if not (reuse and saved.is_file()):
                if kind not in inpainters:
                    inpainters[kind] = make_inpainter(overrides)
                print(f"{name}: {kind} ...", flush=True)
                Image.fromarray(to_uint8(to_hwc(inpainters[kind](image_t, mask_t)))).save(saved)
            results.append(np.asarray(Image.open(saved).convert("RGB")))
        rows.append((name, to_uint8(to_hwc(image_t)), mask_t[0, 0].numpy() > 0, *results))
    return rows


def label_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def compose_strip(rows, caption: str) -> Image.Image:
    titles = ["input, hole tinted", "plain LaMa (refine=false)", "refined (default)"]
    pw, ph = PANEL
    width = 3 * pw + 2 * GAP
    canvas = Image.new("RGB", (width, HEADER + len(rows) * (ph + GAP) + FOOTER), "white")
    draw = ImageDraw.Draw(canvas)
    font = label_font(17)
    for column, title in enumerate(titles):
        draw.text((column * (pw + GAP) + pw / 2, HEADER / 2), title, fill="black", font=font, anchor="mm")
    for r, (name, image, mask, plain, refined) in enumerate(rows):
        box = hole_crop(mask, pw / ph)
        y = HEADER + r * (ph + GAP)
        for column, panel in enumerate((tinted(image, mask), plain, refined)):
            piece = Image.fromarray(panel).crop(box).resize(PANEL, Image.LANCZOS)
            canvas.paste(piece, (column * (pw + GAP), y))
        draw.text((4, y + 3), name, fill="white", font=label_font(14), stroke_width=2, stroke_fill="black")
    draw.text((width / 2, canvas.height - FOOTER / 2), caption, fill="black", font=label_font(15), anchor="mm")
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=Path, default=REPO / "examples")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "strip.jpg")
    parser.add_argument("--cache", type=Path, default=REPO / "outputs" / "readme-strip")
    parser.add_argument("--reuse", action="store_true", help="take the results from --cache if they are there")
    parser.add_argument("--quality", type=int, default=85)
    args = parser.parse_args()
    rows = inpaint_examples(args.examples, args.cache, args.reuse)
    caption = ("built-in demo model (a small network trained by this project, not big-lama); "
               "crops around each hole")
    strip = compose_strip(rows, caption)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(args.out, quality=args.quality, optimize=True)
    print(f"wrote {args.out} ({strip.width}x{strip.height}, {args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
