"""Make README's picture: the built-in examples with the built-in demo model, plain and refined.

    nice python tools/make_readme_strip.py [--out docs/images/strip.jpg] [--reuse]

One row per example of `examples/`; columns: the whole photo with its hole tinted red and a yellow
box, then that box at the photo's own resolution (1:1 pixels): the input, plain LaMa
(`refine=false`) and the refinement (the defaults). The box is placed in the hole where plain and
refined differ most, so the difference is visible at README size. The
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
PANEL = (320, 200)  # each panel's size in the picture; zooms are this many photo pixels (16:10)
GAP, HEADER, FOOTER = 6, 30, 26
TINT = np.array([255, 40, 40], np.float32)


def zoom_box(
    mask: np.ndarray, plain: np.ndarray, refined: np.ndarray, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the `size` (w, h) window, at the photo's own pixels, where
    plain and refined differ most, among the windows that show the hole's border (a fifth to
    four fifths of them hole, so the fill is seen against its context; else any window with at
    least half as much hole as the most)."""
    h, w = mask.shape
    zw, zh = min(size[0], w), min(size[1], h)
    diff = np.abs(plain.astype(np.float32) - refined.astype(np.float32)).sum(-1) * mask

    def window_sums(values: np.ndarray) -> np.ndarray:  # sums over every zh x zw window (summed-area table)
        table = np.pad(values.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        return table[zh:, zw:] - table[:-zh, zw:] - table[zh:, :-zw] + table[:-zh, :-zw]

    hole, changed = window_sums(mask), window_sums(diff)
    border = (hole >= 0.2 * zw * zh) & (hole <= 0.8 * zw * zh)
    score = np.where(border if border.any() else hole >= 0.5 * hole.max(), changed, -1)
    y0, x0 = np.unravel_index(int(score.argmax()), score.shape)
    return int(x0), int(y0), int(x0) + zw, int(y0) + zh


def tinted(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The input with its hole shown: the hole's pixels blended half-way to red."""
    holes = mask[..., None].astype(np.float32)
    return (image * (1 - 0.55 * holes) + TINT * 0.55 * holes).round().astype(np.uint8)


def inpaint_examples(
    examples: Path, cache: Path, reuse: bool
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
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
    """Per example: the whole photo (hole tinted, the zoom's box in yellow), then the zoom at the
    photo's own resolution (1:1 pixels, no resampling): input, plain, refined."""
    titles = ["whole photo, hole tinted", "zoom (1:1 pixels): input", "plain LaMa (refine=false)", "refined (default)"]
    pw, ph = PANEL
    width = 4 * pw + 3 * GAP
    canvas = Image.new("RGB", (width, HEADER + len(rows) * (ph + GAP) + FOOTER), "white")
    draw = ImageDraw.Draw(canvas)
    font = label_font(15)
    for column, title in enumerate(titles):
        draw.text((column * (pw + GAP) + pw / 2, HEADER / 2), title, fill="black", font=font, anchor="mm")
    for r, (name, image, mask, plain, refined) in enumerate(rows):
        y = HEADER + r * (ph + GAP)
        box = zoom_box(mask, plain, refined, PANEL)
        overview = Image.fromarray(tinted(image, mask))
        ImageDraw.Draw(overview).rectangle(box, outline=(255, 220, 0), width=max(3, image.shape[1] // 250))
        overview.thumbnail(PANEL, Image.LANCZOS)
        canvas.paste(overview, ((pw - overview.width) // 2, y + (ph - overview.height) // 2))
        for column, panel in enumerate((tinted(image, mask), plain, refined), start=1):
            canvas.paste(Image.fromarray(panel).crop(box), (column * (pw + GAP), y))
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
    caption = (
        "built-in demo model (a small network trained by this project, not big-lama); "
        "zooms at the photos' full resolution"
    )
    strip = compose_strip(rows, caption)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(args.out, quality=args.quality, optimize=True)
    print(f"wrote {args.out} ({strip.width}x{strip.height}, {args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
