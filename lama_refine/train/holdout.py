"""Evidence that the built-in model is a trained inpainter, on held-out photos only.

Two tables and two pictures for `docs/default-model.md`:
1. 256 px crops of the held-out photos with seeded LaMa masks (thin / medium / thick): hole
   L1 and PSNR of the trained model, the same network untrained, and a classical fill
   (coarse-to-fine Gaussian diffusion, `diffusion_fill`).
2. The held-out photos at 1-2 K px through the `Inpainter`: plain LaMa vs. feature refinement
   (the original's defaults), hole L1 / PSNR and wall time.

Run: `python tools/evaluate_default_model.py` (see its --help).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from lama_refine.io import to_hwc, to_uint8
from lama_refine.models.lama.fill import diffusion_fill
from lama_refine.train.data import FAMILY_CYCLE, shrink_to_short_side, to_tensor, validation_set
from lama_refine.train.loop import network_input
from lama_refine.train.losses import masked_l1, psnr
from lama_refine.train.mask_families import seeded_mask

Fill = Callable[[Tensor, Tensor], Tensor]  # (B,3,H,W) images, (B,1,H,W) masks -> composites

EVAL_SEED = 2024  # differs from the training-time validation seed (1234)
VIEW_SHORT_SIDES = (512, 1024)  # whole-scene and zoomed-in views of each held-out photo


def mean_fill(image: Tensor, mask: Tensor) -> Tensor:
    """The simplest classical fill: every hole pixel gets the mean colour of the known pixels."""
    known = 1 - mask
    mean = (image * known).sum((-2, -1), keepdim=True) / known.sum((-2, -1), keepdim=True).clamp_min(1)
    return known * image + mask * mean.expand_as(image)


def network_fill(generator: nn.Module, batch_size: int = 8) -> Fill:
    """A generator as a `Fill` (eval mode, composites)."""
    generator.eval()

    @torch.no_grad()
    def fill(images: Tensor, masks: Tensor) -> Tensor:
        outs = []
        for i in range(0, len(images), batch_size):
            x, m = images[i : i + batch_size], masks[i : i + batch_size]
            outs.append(m * generator(network_input(x, m)) + (1 - m) * x)
        return torch.cat(outs)

    return fill


@dataclass
class Row:
    method: str
    family: str
    n: int
    l1: float
    psnr: float


def hole_metrics(outputs: Tensor, images: Tensor, masks: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image hole L1 (mean absolute error over hole pixels, [0, 1] scale) and hole PSNR."""
    l1 = np.array([float(masked_l1(o[None], t[None], m[None])) for o, t, m in zip(outputs, images, masks, strict=True)])
    return l1, psnr(outputs, images, masks).numpy()


def crops_table(
    fills: Mapping[str, Fill],
    photos: Mapping[str, np.ndarray],
    size: int = 256,
    per_photo: int = 6,
    seed: int = EVAL_SEED,
    view_short_sides: Sequence[int] = VIEW_SHORT_SIDES,
) -> tuple[list[Row], dict[str, Tensor]]:
    """Score every fill on the same seeded crops; rows per family and overall ("all")."""
    images, masks, families = [], [], []
    for k, view in enumerate(view_short_sides):
        x, m, fam = validation_set(photos, size, per_photo, seed + 1000 * k, view)
        images.append(x)
        masks.append(m)
        families += fam
    x, m = torch.cat(images), torch.cat(masks)
    rows, outputs = [], {}
    for name, fill in fills.items():
        out = fill(x, m)
        outputs[name] = out
        l1, ps = hole_metrics(out, x, m)
        for family in (*FAMILY_CYCLE, "all"):
            sel = np.array([family in ("all", f) for f in families])
            rows.append(Row(name, family, int(sel.sum()), float(l1[sel].mean()), float(ps[sel].mean())))
    outputs["input"], outputs["mask"] = x, m
    return rows, outputs


@dataclass
class HighResRow:
    photo: str
    size: str
    family: str
    hole_percent: float
    scales: int
    plain_l1: float
    plain_psnr: float
    refined_l1: float
    refined_psnr: float
    plain_s: float
    refined_s: float


def fit_size(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize (Lanczos) so the long side is `long_side`."""
    h, w = image.shape[:2]
    r = long_side / max(h, w)
    return np.asarray(Image.fromarray(image).resize((round(w * r), round(h * r)), Image.Resampling.LANCZOS))


def default_inpainter(generator: nn.Module, refine: bool, n_iters: int = 15):
    """The `Inpainter` with every part at its default (the original's behaviour)."""
    from lama_refine.parts.downsample import AllPixelsMaskDownsampler, BlurMaskDownsampler, GaussianDownsampler
    from lama_refine.parts.partition import EvenPartitioner
    from lama_refine.parts.pyramid import OriginalPyramid
    from lama_refine.parts.refine import L1Refiner
    from lama_refine.pipeline import Inpainter

    ds = GaussianDownsampler()
    return Inpainter(
        generator,
        OriginalPyramid(ds, BlurMaskDownsampler()),
        L1Refiner(ds, AllPixelsMaskDownsampler(), n_iters=n_iters),
        EvenPartitioner(),
        [torch.device("cpu")],
        refine=refine,
    )


def highres_case(generator: nn.Module, image: Tensor, mask: Tensor, n_iters: int = 15) -> dict[str, Any]:
    """Plain and refined inpainting of one (1, 3, H, W) image: outputs, metrics, timings."""
    from lama_refine.parts.pyramid import count_scales, fit_pixel_budget

    result: dict[str, Any] = {}
    for refine in (False, True):
        inpainter = default_inpainter(generator, refine, n_iters)
        started = time.time()
        out = inpainter(image, mask)
        key = "refined" if refine else "plain"
        result[f"{key}_s"] = time.time() - started
        result[key] = out
        l1, ps = hole_metrics(out, image, mask)
        result[f"{key}_l1"], result[f"{key}_psnr"] = float(l1[0]), float(ps[0])
    working, _ = fit_pixel_budget(image, mask, 1_800_000)
    h, w = working.shape[-2:]
    result["scales"] = count_scales(h, w, 512, 3)
    return result


def highres_table(
    generator: nn.Module,
    photos: Mapping[str, np.ndarray],
    long_side: int = 1280,
    families_per_photo: int = 1,
    seed: int = EVAL_SEED,
    n_iters: int = 15,
    log: Callable[[str], None] = print,
) -> tuple[list[HighResRow], dict[str, dict[str, object]]]:
    """Every held-out photo at `long_side` px with seeded masks of `families_per_photo` families.

    Families rotate over the photos (thin, medium, thick, thin, ...), so one mask per photo
    still covers every family; refinement costs minutes per photo on a CPU.
    """
    rows, cases = [], {}
    for p, name in enumerate(sorted(photos)):
        image = to_tensor(fit_size(photos[name], long_side))[None]
        h, w = image.shape[-2:]
        for f in range(families_per_photo):
            family = FAMILY_CYCLE[(p + f) % len(FAMILY_CYCLE)]
            mask = torch.from_numpy(seeded_mask(h, w, family, seed + 100 * p + f))[None, None]
            case = highres_case(generator, image, mask, n_iters)
            rows.append(
                HighResRow(
                    name,
                    f"{w}x{h}",
                    family,
                    float(100 * mask.mean()),
                    int(case["scales"]),
                    case["plain_l1"],
                    case["plain_psnr"],
                    case["refined_l1"],
                    case["refined_psnr"],
                    case["plain_s"],
                    case["refined_s"],
                )
            )
            cases[f"{name}/{family}"] = {"image": image, "mask": mask, **case}
            log(
                f"{name} {family}: plain L1 {case['plain_l1']:.4f} / refined {case['refined_l1']:.4f}, "
                f"{case['refined_s']:.0f} s"
            )
    return rows, cases


def crops_markdown(rows: Sequence[Row]) -> str:
    methods = list(dict.fromkeys(r.method for r in rows))
    families = list(dict.fromkeys(r.family for r in rows))
    head = "| method | " + " | ".join(f"{f} L1 / PSNR" for f in families) + " |"
    lines = [head, "|---" * (len(families) + 1) + "|"]
    for m in methods:
        cells = [next(r for r in rows if r.method == m and r.family == f) for f in families]
        lines.append(f"| {m} | " + " | ".join(f"{c.l1:.4f} / {c.psnr:.2f}" for c in cells) + " |")
    n = {f: next(r.n for r in rows if r.family == f) for f in families}
    lines.append("")
    lines.append("Crops per column: " + ", ".join(f"{f} {k}" for f, k in n.items()) + ".")
    return "\n".join(lines)


def highres_markdown(rows: Sequence[HighResRow]) -> str:
    lines = [
        "| photo | size | mask | hole % | scales | plain L1 / PSNR | refined L1 / PSNR | plain s | refined s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.photo} | {r.size} | {r.family} | {r.hole_percent:.1f} | {r.scales} | "
            f"{r.plain_l1:.4f} / {r.plain_psnr:.2f} | {r.refined_l1:.4f} / {r.refined_psnr:.2f} | "
            f"{r.plain_s:.1f} | {r.refined_s:.1f} |"
        )
    mean = lambda attr: float(np.mean([getattr(r, attr) for r in rows]))  # noqa: E731
    lines.append(
        f"| **mean** | | | | | {mean('plain_l1'):.4f} / {mean('plain_psnr'):.2f} | "
        f"{mean('refined_l1'):.4f} / {mean('refined_psnr'):.2f} | {mean('plain_s'):.1f} | "
        f"{mean('refined_s'):.1f} |"
    )
    return "\n".join(lines)


def family_markdown(rows: Sequence[HighResRow]) -> str:
    """Plain vs refined per mask family (means over the photos): does refinement pay on each?"""
    lines = [
        "| mask family | photos | plain L1 / PSNR | refined L1 / PSNR | L1 change | PSNR change | refined better on |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in (*dict.fromkeys(r.family for r in rows), "all"):
        sel = [r for r in rows if family in ("all", r.family)]
        mean = lambda attr, sel=sel: float(np.mean([getattr(r, attr) for r in sel]))  # noqa: E731
        wins = sum(r.refined_l1 < r.plain_l1 and r.refined_psnr > r.plain_psnr for r in sel)
        l1_change = 100 * (mean("refined_l1") / mean("plain_l1") - 1)
        lines.append(
            f"| {family} | {len(sel)} | {mean('plain_l1'):.4f} / {mean('plain_psnr'):.2f} | "
            f"{mean('refined_l1'):.4f} / {mean('refined_psnr'):.2f} | {l1_change:+.1f} % | "
            f"{mean('refined_psnr') - mean('plain_psnr'):+.2f} dB | {wins} of {len(sel)} |"
        )
    return "\n".join(lines)


def picture(x: Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) in [0, 1] -> (H, W, 3) uint8 (the original's truncation, `io.to_uint8`)."""
    return to_uint8(to_hwc(x if x.dim() == 4 else x[None]))


def show_hole(image: Tensor, mask: Tensor) -> Tensor:
    """The input as a user sees it: the hole painted white."""
    return image * (1 - mask) + mask


def grid_picture(rows: Sequence[Sequence[np.ndarray]], cell: tuple[int, int], gap: int = 4) -> Image.Image:
    """A white-gapped grid of (H, W, 3) uint8 pictures, each resized to `cell` (w, h)."""
    cw, ch = cell
    n_cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (n_cols * cw + (n_cols - 1) * gap, len(rows) * ch + (len(rows) - 1) * gap), "white")
    for i, row in enumerate(rows):
        for j, picture in enumerate(row):
            tile = Image.fromarray(picture).resize((cw, ch), Image.Resampling.LANCZOS)
            sheet.paste(tile, (j * (cw + gap), i * (ch + gap)))
    return sheet


def crops_picture(
    outputs: Mapping[str, Tensor], methods: Sequence[str], indices: Sequence[int], cell: int = 200
) -> Image.Image:
    """Rows of crops: input with hole, each method's fill, the original."""
    rows = []
    for i in indices:
        x, m = outputs["input"][i], outputs["mask"][i]
        rows.append([picture(show_hole(x, m))] + [picture(outputs[k][i]) for k in methods] + [picture(x)])
    return grid_picture(rows, (cell, cell))


def hole_box(mask: Tensor, margin: float = 0.25) -> tuple[int, int, int, int]:
    """A (top, left, h, w) window around the hole's bounding box, with a relative margin."""
    ys, xs = torch.nonzero(mask[0, 0] > 0, as_tuple=True)
    top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = int(max(bottom - top, right - left) * (1 + 2 * margin))
    h, w = mask.shape[-2:]
    side = min(side, h, w)
    cy, cx = (top + bottom) // 2, (left + right) // 2
    top = min(max(0, cy - side // 2), h - side)
    left = min(max(0, cx - side // 2), w - side)
    return top, left, side, side


def highres_picture(image: Tensor, mask: Tensor, plain: Tensor, refined: Tensor, width: int = 1024) -> Image.Image:
    """Top: input with hole | plain | refined | original; bottom: the same, zoomed on the hole."""
    pictures = [show_hole(image, mask), plain, refined, image]
    top, left, hh, ww = hole_box(mask)
    gap = 4
    cw = (width - 3 * gap) // 4
    h, w = image.shape[-2:]
    full = grid_picture([[picture(p) for p in pictures]], (cw, round(cw * h / w)), gap)
    zoom = grid_picture([[picture(p[..., top : top + hh, left : left + ww]) for p in pictures]], (cw, cw), gap)
    sheet = Image.new("RGB", (full.width, full.height + gap + zoom.height), "white")
    sheet.paste(full, (0, 0))
    sheet.paste(zoom, (0, full.height + gap))
    return sheet


def save_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=lambda o: asdict(o)))


__all__ = [
    "EVAL_SEED",
    "HighResRow",
    "Row",
    "crops_markdown",
    "crops_picture",
    "crops_table",
    "default_inpainter",
    "diffusion_fill",
    "family_markdown",
    "fit_size",
    "grid_picture",
    "highres_case",
    "highres_markdown",
    "highres_picture",
    "highres_table",
    "hole_metrics",
    "mean_fill",
    "network_fill",
    "picture",
    "shrink_to_short_side",
]
