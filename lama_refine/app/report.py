"""`report.html`: one static page to look at an evaluation, written by `lama-refine-eval`.

The page needs no network: its CSS and JavaScript are inline and its pictures are PNG files beside
it, linked by relative paths, so the folder can be copied or zipped as it is. It holds

- the settings table: for one run, `metrics.csv` (the per-image rows and the mean); for a sweep,
  `comparison.csv` (each setting's means and paired differences from the baseline). A click on a
  column header sorts by that column, a second click reverses the order;
- the per-bin table (`bins.csv`, or `comparison_bins.csv` for a sweep);
- per pictured image, the input (hole in grey), every setting's result and the ground truth side by
  side, starting at 1:1 pixels centred on the hole. The wheel or the buttons zoom, a drag pans, and
  every pane of an image moves with the others (one CSS transform on each pane's picture);
- links to the traces: each run's `trace=DIR` pages (recorded in its `summary.json`, linked by a
  relative path, so they work while the two folders keep their places) and any `trace/**/index.html`
  under the run's folder or a setting's folder.

The pictures are written during the evaluation by `save_pictures`, for the first `report_images`
images of a run: `outputs/<name>.png` (the result), `inputs/<name>.png` (the input as the network
sees it), `truth/<name>.png` and `masks/<name>_mask.png` (which centres the view on the hole).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image
from torch import Tensor

from lama_refine.io import write_result
from lama_refine.io.write import write_atomic

REPORT = "report.html"
# name -> the file of that picture under a run's folder
PICTURES = {
    "input": "inputs/{}.png",
    "output": "outputs/{}.png",
    "truth": "truth/{}.png",
    "mask": "masks/{}_mask.png",
}
CAPTION_METRICS = ("psnr", "ssim", "lpips", "hole_l1")
# images past this many load when scrolled to, so a long report opens quickly
EAGER_IMAGES = 24


# --- the pictures, written by the evaluation -----------------------------------------------------


def picture_path(run_dir: Path, kind: str, name: str) -> Path:
    return run_dir / PICTURES[kind].format(name)


def has_pictures(run_dir: Path, name: str) -> bool:
    """Whether an earlier run left every picture the report shows of image `name`."""
    return all(picture_path(run_dir, kind, name).is_file() for kind in PICTURES)


def save_pictures(run_dir: Path, name: str, shown_input: Tensor, truth: Tensor, result: Tensor, mask: Tensor) -> None:
    """The report's pictures of one image (each (1, C, H, W) in [0, 1]), written atomically."""
    for kind, image in (("input", shown_input), ("output", result), ("truth", truth), ("mask", mask)):
        write_result(picture_path(run_dir, kind, name), image.expand(-1, 3, -1, -1) if kind == "mask" else image)


def hole_box(mask_file: Path) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) around the hole's pixels, or None for an empty mask."""
    with Image.open(mask_file) as im:
        return im.convert("L").point(lambda v: 255 if v > 0 else 0).getbbox()


def hole_centre(mask_file: Path) -> tuple[float, float] | None:
    """Where a view of the hole starts (x, y in pixels): the hole's centroid where it lies in the
    hole, else the hole pixel nearest it. The centre of the box around a mask of several strokes
    (LaMa's families) often falls between them, showing no hole at all."""
    with Image.open(mask_file) as im:
        hole = np.asarray(im.convert("L")) > 0
    ys, xs = np.nonzero(hole)
    if len(xs) == 0:
        return None
    cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5  # pixel centres
    if hole[min(int(cy), hole.shape[0] - 1), min(int(cx), hole.shape[1] - 1)]:
        return cx, cy
    nearest = int(np.argmin((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2))
    return float(xs[nearest]) + 0.5, float(ys[nearest]) + 0.5


# --- what the page shows -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One run of the report: its name, its folder relative to the report and its per-image rows."""

    name: str
    folder: str  # "" for a one-run report
    images: list[dict]
    trace: str | None = None  # the folder its `trace=DIR` pages went to, absolute


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def settings_of(directory: Path, sweep: bool) -> list[Setting]:
    """The runs a report covers: the sweep's jobs in job order (their `summary.json`), or the run."""
    if not sweep:
        summary = json.loads((directory / "summary.json").read_text())
        return [Setting(summary["setting"], "", summary.get("images", []), summary.get("trace"))]
    found = []
    for path in directory.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        setting = Setting(summary["setting"], path.parent.name, summary.get("images", []), summary.get("trace"))
        found.append((summary["job"], setting))
    return [s for _, s in sorted(found, key=lambda js: js[0])]


def url(*parts: str) -> str:
    return quote("/".join(p for p in parts if p))


def cell(value: str) -> str:
    """A table cell: numbers shown to 5 significant digits and sorted by their full value."""
    try:
        number = float(value)
    except ValueError:
        return f"<td>{html.escape(value)}</td>"
    if math.isnan(number):  # sorts as an empty cell, last
        return '<td class="num" data-v="">nan</td>'
    # JavaScript's parseFloat reads "Infinity" (a lossless PSNR), not Python's "inf"
    key = repr(number) if math.isfinite(number) else ("Infinity" if number > 0 else "-Infinity")
    return f'<td class="num" data-v="{key}">{number:.5g}</td>'


def table_html(columns: Sequence[str], rows: Sequence[dict[str, str]], pinned: str | None = None) -> str:
    """A sortable table; rows whose first column is `pinned` (the mean) stay at the bottom."""
    if not columns:
        return "<p>(none)</p>"
    head = "".join(f'<th title="click to sort">{html.escape(c)}</th>' for c in columns)
    body = []
    for row in rows:
        pin = ' class="pinned"' if pinned is not None and row.get(columns[0]) == pinned else ""
        body.append(f"<tr{pin}>" + "".join(cell(row.get(c) or "") for c in columns) + "</tr>")
    table = f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def caption(row: dict | None) -> str:
    if not row:
        return ""
    return ", ".join(f"{m} {row[m]:.4g}" for m in CAPTION_METRICS if isinstance(row.get(m), int | float))


def viewer_html(directory: Path, name: str, settings: Sequence[Setting], eager: bool) -> str | None:
    """Image `name`'s panes (input, every setting's result, ground truth), or None where no run
    pictured it."""
    source = next((s for s in settings if has_pictures(directory / s.folder, name)), None)
    if source is None:
        return None
    run_dir = directory / source.folder
    with Image.open(picture_path(run_dir, "truth", name)) as im:
        width, height = im.size
    box = hole_box(picture_path(run_dir, "mask", name)) or (0, 0, width, height)
    panes = [("input (hole in grey)", url(source.folder, PICTURES["input"].format(name)))]
    for s in settings:
        rows = {r["image"]: r for r in s.images}
        if picture_path(directory / s.folder, "output", name).is_file():
            label = s.name + (f" ({caption(rows.get(name))})" if rows.get(name) else "")
            panes.append((label, url(s.folder, PICTURES["output"].format(name))))
    panes.append(("ground truth", url(source.folder, PICTURES["truth"].format(name))))
    loading = "eager" if eager else "lazy"
    figures = "".join(
        f'<figure class="pane"><figcaption>{html.escape(label)}</figcaption><div class="port">'
        f'<img src="{src}" width="{width}" height="{height}" loading="{loading}" draggable="false" alt="">'
        "</div></figure>"
        for label, src in panes
    )
    visual = ""
    for s in settings:
        if (directory / s.folder / "visuals" / f"{name}.png").is_file():
            visual = f' <a href="{url(s.folder, "visuals", name + ".png")}">side-by-side picture</a>'
            break
    cx, cy = hole_centre(picture_path(run_dir, "mask", name)) or (width / 2, height / 2)
    return (
        f'<section class="viewer" data-cx="{cx}" data-cy="{cy}" data-w="{width}" data-h="{height}">'
        f"<h3>{html.escape(name)} <small>{width}x{height}, hole {box[2] - box[0]}x{box[3] - box[1]}"
        f"</small>{visual}</h3>"
        '<div class="tools"><button data-zoom="in">+</button><button data-zoom="out">&minus;</button>'
        '<button data-zoom="one">1:1 on the hole</button><button data-zoom="fit">whole image</button>'
        ' <span class="scale"></span></div>'
        f'<div class="panes">{figures}</div></section>'
    )


def image_names(settings: Sequence[Setting]) -> list[str]:
    """Every image any setting measured, in the order of the first setting that has it."""
    return list(dict.fromkeys(r["image"] for s in settings for r in s.images))


def trace_links(directory: Path, settings: Sequence[Setting]) -> list[str]:
    """`index.html` files under each setting's `trace=DIR` (wherever it is: relative links may climb
    out of the report's folder) and under `trace/` of the report's folder and of each setting's."""
    recorded = [Path(s.trace) for s in settings if s.trace]
    folders = dict.fromkeys([*recorded, directory / "trace", *(directory / s.folder / "trace" for s in settings)])
    pages = sorted({p.resolve() for folder in folders if folder.is_dir() for p in folder.rglob("index.html")})
    return [Path(os.path.relpath(p, directory.resolve())).as_posix() for p in pages]


def own_pages(directory: Path, settings: Sequence[Setting]) -> str:
    """Links to each setting's own report (its per-image table)."""
    links = [
        f'<a href="{url(s.folder, REPORT)}">{html.escape(s.name)}</a>'
        for s in settings
        if (directory / s.folder / REPORT).is_file()
    ]
    return f"<p>Each setting's own page, with its per-image table: {', '.join(links)}</p>" if links else ""


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}<script>{JS}</script></body></html>\n"
    )


def write_report(directory: Path, sweep: bool = False) -> Path:
    """`directory/report.html` for the run (metrics.csv, bins.csv, summary.json) or, with `sweep`,
    for the sweep in `directory` (comparison.csv, comparison_bins.csv, one folder per setting)."""
    settings = settings_of(directory, sweep)
    if sweep:
        table, bins = read_csv(directory / "comparison.csv"), read_csv(directory / "comparison_bins.csv")
        title = f"Sweep {directory.name}: {len(settings)} settings"
    else:
        table, bins = read_csv(directory / "metrics.csv"), read_csv(directory / "bins.csv")
        title = f"Evaluation: {settings[0].name}"
    names = image_names(settings)
    viewers = [v for i, n in enumerate(names) if (v := viewer_html(directory, n, settings, i < EAGER_IMAGES))]
    traces = trace_links(directory, settings)
    body = [
        "<h2>Settings</h2>" if sweep else "<h2>Images</h2>",
        table_html(*table, pinned=None if sweep else "mean"),
        own_pages(directory, settings) if sweep else "",
        "<h2>By the mask's share of the image (LaMa's bins)</h2>",
        table_html(*bins, pinned=None if sweep else "overall"),
        f"<h2>Pictures</h2><p>{len(viewers)} of {len(names)} images pictured. Each starts at 1:1 pixels "
        "centred on the hole; the wheel or the buttons zoom, a drag pans, all panes of an image together.</p>",
        *viewers,
    ]
    if traces:
        body.append(
            "<h2>Traces</h2><ul>" + "".join(f'<li><a href="{quote(t)}">{html.escape(t)}</a></li>' for t in traces)
        )
        body.append("</ul>")
    path = directory / REPORT
    text = page(title, "\n".join(body))
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


CSS = """
body{font:14px system-ui,sans-serif;margin:1em 2em;color:#222}
table{border-collapse:collapse;font-size:12px}
.scroll{overflow-x:auto;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:2px 6px;white-space:nowrap}
th{background:#eee;cursor:pointer;user-select:none}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.pinned td{font-weight:bold;background:#f6f6f6}
.viewer{margin:1em 0 2em}
.viewer h3{margin:.3em 0;font-size:15px} .viewer small{color:#666;font-weight:normal}
.panes{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-end}
.pane{margin:0} .pane figcaption{font-size:12px;max-width:300px;overflow-wrap:anywhere}
.port{width:300px;height:225px;overflow:hidden;position:relative;background:#888;cursor:grab;touch-action:none}
.port img{position:absolute;left:0;top:0;transform-origin:0 0;max-width:none}
.port.dragging{cursor:grabbing}
.pixels .port img{image-rendering:pixelated}
.tools button{margin-right:4px}
"""

JS = r"""
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var up = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(up ? "asc" : "desc");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function (row) {
        var c = row.cells[col];
        if (c.dataset.v === undefined) return c.textContent;
        return c.dataset.v === "" ? "" : parseFloat(c.dataset.v);
      };
      rows.sort(function (a, b) {
        var pa = a.classList.contains("pinned"), pb = b.classList.contains("pinned");
        if (pa !== pb) return pa ? 1 : -1;
        var x = key(a), y = key(b), ex = x === "", ey = y === "";
        if (ex || ey) return ex === ey ? 0 : (ex ? 1 : -1);  // empty cells last either way
        var d = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return up ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});

document.querySelectorAll(".viewer").forEach(function (viewer) {
  var ports = viewer.querySelectorAll(".port");
  var imgs = viewer.querySelectorAll(".port img");
  var w = +viewer.dataset.w, h = +viewer.dataset.h, cx = +viewer.dataset.cx, cy = +viewer.dataset.cy;
  var pw = ports[0].clientWidth, ph = ports[0].clientHeight;
  var one = 1 / (window.devicePixelRatio || 1);  // one image pixel on one screen pixel
  var view = {s: one, x: 0, y: 0};
  function apply() {
    var t = "translate(" + view.x + "px, " + view.y + "px) scale(" + view.s + ")";
    imgs.forEach(function (img) { img.style.transform = t; });
    viewer.classList.toggle("pixels", view.s > one);
    viewer.querySelector(".scale").textContent = (view.s / one).toFixed(2) + "x";
  }
  function centre(s, x, y) { view.s = s; view.x = pw / 2 - x * s; view.y = ph / 2 - y * s; apply(); }
  function zoom(f, px, py) {
    var s = Math.min(64, Math.max(0.01, view.s * f));
    view.x = px - (px - view.x) * s / view.s; view.y = py - (py - view.y) * s / view.s; view.s = s; apply();
  }
  viewer.querySelectorAll("button").forEach(function (b) {
    b.addEventListener("click", function () {
      var z = b.dataset.zoom;
      if (z === "in") zoom(2, pw / 2, ph / 2);
      else if (z === "out") zoom(0.5, pw / 2, ph / 2);
      else if (z === "one") centre(one, cx, cy);
      else centre(Math.min(pw / w, ph / h), w / 2, h / 2);
    });
  });
  ports.forEach(function (port) {
    port.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = port.getBoundingClientRect();
      zoom(Math.exp(-e.deltaY * 0.002), e.clientX - r.left, e.clientY - r.top);
    }, {passive: false});
    var last = null;
    port.addEventListener("pointerdown", function (e) {
      last = [e.clientX, e.clientY]; port.setPointerCapture(e.pointerId); port.classList.add("dragging");
    });
    port.addEventListener("pointermove", function (e) {
      if (!last) return;
      view.x += e.clientX - last[0]; view.y += e.clientY - last[1]; last = [e.clientX, e.clientY]; apply();
    });
    function end() { last = null; port.classList.remove("dragging"); }
    port.addEventListener("pointerup", end);
    port.addEventListener("pointercancel", end);
  });
  centre(one, cx, cy);
});
"""

__all__ = ["REPORT", "has_pictures", "save_pictures", "write_report"]
