"""What `trace=DIR` costs: a refinement with the trace off, on (the refiner's copies), and the
writing of the trace's files, per image.

    nice python benchmarks/trace.py                     # ~2-3 min on 2 busy cores
    nice python benchmarks/trace.py --side 640 --n-iters 5 --repeats 3

The built-in demo model on the example photos (examples/*.jpg and their masks), shrunk to `--side`
px on the long side to keep the run short, 2 scales (`pyramid.min_side` a quarter of the side) and
`--n-iters` iterations. One process, one pipeline; each photo runs once to warm up, then
`--repeats` times off and on in turn (the median is reported). "off" is the pipeline with no
`on_scale` hook: the refiner's only trace code on that path is the `hooks.tracing` check, so "off"
is main's run (no files, no copies). "on" is the refinement with `Tracer.on_scale` (CPU copies of
each scale's tensors), "write" the `Tracer.finish` that writes the PNGs, plots, trace.json and
index.html. The outputs off and on are compared bit for bit. The table is printed and written into
docs/benchmarks.md and benchmarks/notes.md between the `trace` markers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from less_work import write_section  # noqa: E402

from lama_refine.app.trace import Tracer  # noqa: E402
from lama_refine.config import build_inpainter, compose  # noqa: E402
from lama_refine.io import read_image, read_mask  # noqa: E402
from lama_refine.parts.refine import RefineHooks  # noqa: E402
from lama_refine.perf.switches import apply_process_settings  # noqa: E402

PHOTOS = ("boats", "forest", "ladybird")
BEGIN, END = "<!-- trace:begin -->", "<!-- trace:end -->"


def shrunk(photo: str, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    image = read_image(REPO / "examples" / f"{photo}.jpg")
    mask = read_mask(REPO / "examples" / f"{photo}_mask.png")
    h, w = image.shape[-2:]
    scale = side / max(h, w)
    size = (round(h * scale), round(w * scale))
    image = F.interpolate(image, size=size, mode="area")
    mask = (F.interpolate(mask, size=size, mode="area") > 0).float()
    return image, mask


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=320)
    parser.add_argument("--n-iters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    cfg = compose(
        [f"refiner.n_iters={args.n_iters}", f"pyramid.min_side={args.side // 4}", "progress=false", "devices=cpu"]
    )
    inpainter = build_inpainter(cfg)
    apply_process_settings(inpainter.perf)
    off_hooks = inpainter.hooks
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tracer = Tracer(Path(tmp))
        on_hooks = RefineHooks(progress=off_hooks.progress, after_step=off_hooks.after_step, on_scale=tracer.on_scale)
        for photo in PHOTOS:
            image, mask = shrunk(photo, args.side)
            inpainter.hooks = off_hooks
            inpainter.run(image, mask)  # warm-up
            off, on, write, same = [], [], [], True
            for _ in range(args.repeats):
                inpainter.hooks = off_hooks
                start = time.perf_counter()
                plain = inpainter.run(image, mask).image
                off.append(time.perf_counter() - start)
                inpainter.hooks = on_hooks
                tracer.start(photo)
                start = time.perf_counter()
                traced = inpainter.run(image, mask).image
                on.append(time.perf_counter() - start)
                write.append(timed(tracer.finish))
                same = same and torch.equal(plain, traced)
            files = sum(1 for _ in (Path(tmp) / photo).iterdir())
            size_kb = sum(p.stat().st_size for p in (Path(tmp) / photo).iterdir()) / 1024
            rows.append(
                {
                    "photo": f"{photo} {image.shape[-1]}x{image.shape[-2]}",
                    "off": statistics.median(off),
                    "on": statistics.median(on),
                    "write": statistics.median(write),
                    "files": files,
                    "kb": size_kb,
                    "same": same,
                }
            )
            print(rows[-1], flush=True)
    header = (
        "| photo | off s | on s (refinement) | write s | on + write vs off | files | trace KB | outputs off = on |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['photo']} | {r['off']:.2f} | {r['on']:.2f} | {r['write']:.2f} | "
        f"{(r['on'] + r['write']) / r['off'] - 1:+.0%} | {r['files']} | {r['kb']:.0f} | "
        f"{'bit-identical' if r['same'] else 'DIFFER'} |"
        for r in rows
    ]
    table = header + "\n" + "\n".join(lines)
    print(table)
    if args.no_write:
        return
    load = os.getloadavg()[0]
    text = (
        f"{BEGIN}\n### Trace (`python benchmarks/trace.py`)\n\n"
        f"What `trace=DIR` costs per image: the demo model on the example photos shrunk to {args.side} px, "
        f"2 scales, {args.n_iters} iterations, CPU, median of {args.repeats} runs each after a warm-up, "
        f'{datetime.date.today()}, load average {load:.1f}. "off" has no `on_scale` hook, which is '
        "main's code path (the refiner checks `hooks.tracing` and builds nothing), so trace off costs "
        'nothing against main; "on" is the refinement with the hook (CPU copies of each scale\'s tensors), '
        '"write" the files of one image (PNGs at own and display size, loss plots, trace.json, index.html).\n\n'
        + table
        + f"\n{END}"
    )
    for path in (REPO / "docs" / "benchmarks.md", REPO / "benchmarks" / "notes.md"):
        write_section(path, text, BEGIN, END)
    print("written to docs/benchmarks.md and benchmarks/notes.md")


if __name__ == "__main__":
    main()
