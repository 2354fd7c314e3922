"""`trace=DIR`: what each scale of a refinement saw and made, written for a person to look at.

`Tracer` is a `RefineHooks.on_scale` receiver: it keeps a CPU copy of each scale's `ScaleTrace`
(the refiner computed every tensor anyway; nothing is re-run) and, at the end of an image, writes
`DIR/<image>/`: per scale the image, the pyramid mask and the loss's eroded coarse hole, each at
the scale's own size and at a common display size (the finest scale's, at most `display_max` on the
long side; masks upscaled nearest, images bilinear), the coarser result the loss compares with
(`target`), the scale's result and a plot of its losses (matplotlib, where installed), plus
`trace.json` (the files, sizes and loss values) and a static `index.html` with every path relative,
so a report can link `<image>/index.html`. Every file is written atomically, under DIR only.
"""

from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lama_refine.io.write import to_hwc, to_uint8, write_atomic
from lama_refine.parts.refine import ScaleTrace

log = logging.getLogger(__name__)

TRACE_JSON = "trace.json"
INDEX_HTML = "index.html"
TRACE_VERSION = 1


def safe_name(name: str) -> str:
    """A job's name as one folder name under DIR: no separators, no `..`, no leading dot."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    return cleaned


@dataclass
class _Scale:
    index: int
    n_scales: int
    crop: int
    image: Tensor
    mask: Tensor
    result: Tensor
    losses: list[float]
    loss_hole: Tensor | None
    target: Tensor | None


def _size(t: Tensor) -> list[int]:
    return [int(t.shape[-2]), int(t.shape[-1])]


def _save_png(path: Path, rgb: Tensor) -> None:
    """(1, C, h, w) in [0, 1] (C = 1 or 3) -> an RGB PNG, atomically."""
    array = to_uint8(to_hwc(rgb.float().expand(-1, 3, -1, -1)))
    write_atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _display(t: Tensor, size: tuple[int, int], nearest: bool) -> Tensor:
    if tuple(t.shape[-2:]) == size:
        return t.float()
    mode = "nearest-exact" if nearest else "bilinear"
    kwargs: dict[str, Any] = {} if nearest else {"align_corners": False}
    return F.interpolate(t.float(), size=size, mode=mode, **kwargs).clamp_(0, 1)


def display_size(finest: tuple[int, int], display_max: int) -> tuple[int, int]:
    """The finest scale's size, shrunk (aspect kept) so the long side is at most `display_max`."""
    h, w = finest
    scale = min(1.0, display_max / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def plot_losses(path: Path, losses: list[float], title: str) -> bool:
    """The loss per iteration as a PNG; False where matplotlib is missing (the caller says so once)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(4, 2.6), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return True


@dataclass
class Tracer:
    """Collects one image's scales (`on_scale`) and writes them under `root` (`finish`).

    `start(name)` begins an image; scales arriving before the next `start` belong to it. With
    `region=crop` each crop's scales arrive in turn (a scale index 0 begins the next crop) and
    are written as crop 0, 1, ...
    """

    root: Path
    display_max: int = 1024
    _name: str | None = None
    _scales: list[_Scale] = field(default_factory=list)
    _warned_plot: bool = False

    def start(self, name: str) -> None:
        self._name = safe_name(str(name))
        self._scales = []

    def on_scale(self, trace: ScaleTrace) -> None:
        if self._name is None:
            return
        crop = self._scales[-1].crop if self._scales else -1
        if trace.index == 0:
            crop += 1

        def keep(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().to("cpu", copy=True)

        image, mask, result = keep(trace.image), keep(trace.mask), keep(trace.result)
        assert image is not None and mask is not None and result is not None
        self._scales.append(
            _Scale(
                trace.index,
                trace.n_scales,
                max(crop, 0),
                image,
                mask,
                result,
                list(trace.losses),
                keep(trace.loss_hole),
                keep(trace.target),
            )
        )

    def discard(self) -> None:
        """Forget the image begun (a failed or retried run)."""
        self._scales = []

    def finish(self) -> Path | None:
        """Write the image begun by `start` (if any scale arrived); -> its folder, else None."""
        name, scales = self._name, self._scales
        self._name, self._scales = None, []
        if name is None:
            return None
        if not scales:
            log.info("trace: %s ran no refinement (refine=false, or an empty mask), so nothing is traced", name)
            return None
        folder = self.root / name
        write_trace(folder, scales, self.display_max, self._say_no_plot)
        log.info("trace of %s -> %s", name, folder / INDEX_HTML)
        return folder

    def _say_no_plot(self) -> None:
        if not self._warned_plot:
            log.info("trace: matplotlib is not installed, so the loss plots are left out (pip install matplotlib)")
            self._warned_plot = True


def write_trace(folder: Path, scales: list[_Scale], display_max: int, no_plot=lambda: None) -> dict[str, Any]:
    """Every file of one traced image under `folder`; -> the `trace.json` content."""
    finest = max((s.image for s in scales), key=lambda t: t.shape[-2] * t.shape[-1])
    shown = display_size((int(finest.shape[-2]), int(finest.shape[-1])), display_max)
    n_crops = scales[-1].crop + 1
    entries = []
    for s in scales:
        prefix = f"crop{s.crop}_scale{s.index}" if n_crops > 1 else f"scale{s.index}"
        files: dict[str, str] = {}
        sizes: dict[str, list[int]] = {}

        # (key, tensor, masks upscale nearest, also at the display size)
        pictures = [
            ("image", s.image, False, True),
            ("mask", s.mask, True, True),
            ("loss_hole", s.loss_hole, True, True),
            ("target", s.target, False, False),
            ("result", s.result, False, True),
        ]
        for key, t, nearest, both in pictures:
            if t is None:
                continue
            files[key] = f"{prefix}_{key}.png"
            sizes[key] = _size(t)
            _save_png(folder / files[key], t.float())
            if both:
                files[f"{key}_display"] = f"{prefix}_{key}_display.png"
                sizes[f"{key}_display"] = list(shown)
                _save_png(folder / files[f"{key}_display"], _display(t, shown, nearest))
        if s.losses:
            plot = f"{prefix}_losses.png"
            if plot_losses(folder / plot, s.losses, f"scale {s.index}: loss per iteration"):
                files["losses_plot"] = plot
            else:
                no_plot()
        entries.append(
            {
                "crop": s.crop,
                "scale": s.index,
                "n_scales": s.n_scales,
                "size": _size(s.image),
                "hole_pixels": int(s.mask.sum()),
                "loss_hole_pixels": None if s.loss_hole is None else int(s.loss_hole.sum()),
                "losses": s.losses,
                "files": files,
                "sizes": sizes,
            }
        )
    content = {"version": TRACE_VERSION, "display_size": list(shown), "scales": entries}
    text = json.dumps(content, indent=1)
    write_atomic(folder / TRACE_JSON, lambda tmp: tmp.write_text(text))
    page = index_html(folder.name, content)
    write_atomic(folder / INDEX_HTML, lambda tmp: tmp.write_text(page))
    return content


_CAPTIONS = {
    "image": "image",
    "mask": "pyramid mask",
    "loss_hole": "loss's coarse hole (eroded)",
    "target": "coarser result (target in the hole)",
    "result": "this scale's result",
    "losses_plot": "loss per iteration",
}


def index_html(name: str, content: dict[str, Any]) -> str:
    """A static page: per scale, the display-size pictures side by side, then the own-size ones."""
    rows = []
    for entry in content["scales"]:
        files = entry["files"]
        cells = []
        for key in ("image", "mask", "loss_hole", "result"):
            if f"{key}_display" in files:
                src = html.escape(files[f"{key}_display"])
                cells.append(
                    f'<figure><img src="{src}" alt="{key}"><figcaption>{_CAPTIONS[key]} '
                    f'(display; own size: <a href="{html.escape(files[key])}">{entry["sizes"][key][1]}x'
                    f"{entry['sizes'][key][0]}</a>)</figcaption></figure>"
                )
        for key in ("target", "losses_plot"):
            if key in files:
                cells.append(
                    f'<figure><img src="{html.escape(files[key])}" alt="{key}" class="own">'
                    f"<figcaption>{_CAPTIONS[key]}</figcaption></figure>"
                )
        losses = ", ".join(f"{v:.5g}" for v in entry["losses"]) or "none (not optimised)"
        crop = f"crop {entry['crop']}, " if any(e["crop"] for e in content["scales"]) else ""
        rows.append(
            f"<section><h2>{crop}scale {entry['scale']} of {entry['n_scales']} "
            f"({entry['size'][1]}x{entry['size'][0]})</h2><div class=row>{''.join(cells)}</div>"
            f"<p>losses: {losses}</p></section>"
        )
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>trace of {html.escape(name)}</title><style>"
        "body{font-family:sans-serif;margin:1em}.row{display:flex;flex-wrap:wrap;gap:8px}"
        "figure{margin:0;max-width:32%}figure img{width:100%;image-rendering:pixelated}"
        "figure img.own{width:auto;max-width:100%}figcaption{font-size:12px}</style></head><body>"
        f"<h1>trace of {html.escape(name)}</h1><p>Coarsest scale first; <a href={TRACE_JSON}>{TRACE_JSON}</a> "
        "holds the values.</p>" + "".join(rows) + "</body></html>\n"
    )


__all__ = ["INDEX_HTML", "TRACE_JSON", "Tracer", "display_size", "index_html", "safe_name", "write_trace"]
