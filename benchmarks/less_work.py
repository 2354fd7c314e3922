"""Less work per image: what early stopping (`refiner.stop`) and warm start (`refiner.warm_start`)
save and change, against the 15-iteration run without them.

    nice python benchmarks/less_work.py                      # both studies on ladybird, ~20 min on 2 busy cores
    nice python benchmarks/less_work.py --study default --photos boats,forest,ladybird

Studies:
- `default`: the built-in model on the held-out example photos (examples/*.jpg, 1200-1280 px
  long side, their masks), read as the CLI reads them.
- `big-lama`: big-lama-shaped random weights (benchmarks/bench.py's generator) on the same
  photos shrunk to `--big-lama-side` px (big-lama is slow on 2 cores).

Each photo runs at 2 scales (the default pyramid) for early stopping, and at 3 scales
(`pyramid.min_side` smaller) for warm start, which acts from the third scale on. The reference
of each pyramid is the 15-iteration run with both switches off (the lean default; within 2e-6
of the faithful baseline, README "Faithful to the original"). Reported per run: forwards
per refined scale, wall time, the final loss (last forward at the finest scale) and the
hole-region mean / max |difference| of the output to the reference, in [0, 1] pixel units.
The table is printed and written into docs/benchmarks.md and benchmarks/notes.md between the
`less-work` markers (bench.py rebuilds docs/benchmarks.md from notes.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench import benchmark_generator  # noqa: E402

from lama_refine.config import build_inpainter, compose  # noqa: E402
from lama_refine.io import read_image, read_mask  # noqa: E402
from lama_refine.perf.switches import apply_process_settings  # noqa: E402

PHOTOS = ("boats", "forest", "ladybird")  # held out from the demo model's training (examples/README.md)


def plans(stops: list[tuple[float, int]]) -> dict[str, list[tuple[str, list[str], int]]]:
    """pyramid -> [(name, overrides, n_iters)]; the first of each is the reference: off at 15 iterations."""
    stop_runs = [
        (f"stop(tol={tol:g},p={patience})", [f"refiner.stop.tol={tol}", f"refiner.stop.patience={patience}"], 15)
        for tol, patience in stops
    ]
    return {
        "2 scales": [("off", [], 15), *stop_runs],
        "3 scales": [
            ("off", [], 15),
            ("warm", ["refiner.warm_start=true"], 15),
            ("off", [], 5),
            ("warm", ["refiner.warm_start=true"], 5),
        ],
    }


BEGIN, END = "<!-- less-work:begin -->", "<!-- less-work:end -->"


def load(name: str, long_side: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    image, mask = read_image(REPO / "examples" / f"{name}.jpg"), read_mask(REPO / "examples" / f"{name}_mask.png")
    if long_side is not None and max(image.shape[-2:]) != long_side:
        scale = long_side / max(image.shape[-2:])
        size = (round(image.shape[-2] * scale), round(image.shape[-1] * scale))
        image = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        mask = (F.interpolate(mask, size=size, mode="area") > 0).float()
    return image, mask


def run_one(generator, image, mask, overrides: list[str]) -> dict:
    cfg = compose(["indir=x", "outdir=y", "progress=false", "devices=[cpu]", "perf.threads=1", *overrides])
    inpainter = build_inpainter(cfg, generator=generator)
    apply_process_settings(inpainter.perf)  # perf.threads=1: this script is the entry point
    start = time.perf_counter()
    result = inpainter.run(image, mask)
    seconds = time.perf_counter() - start
    return {
        "image": result.image,
        "seconds": seconds,
        "iterations": [len(s) for s in result.losses],
        "final_loss": result.losses[-1][-1] if result.losses and result.losses[-1] else None,
    }


def row_key(r: dict) -> str:
    return f"{r['model']}|{r['photo']}|{r['pyramid']}|{r['config']}|{r['n_iters']}"


def study(
    model: str,
    photos: list[str],
    long_side: int | None,
    min_sides: dict[str, int],
    stops,
    done: dict,
    scratch: Path,
    log,
) -> None:
    """Run what `done` (key -> row, updated in place; `log` after each) lacks; reference outputs
    are kept in `scratch`."""
    generator = benchmark_generator(model)
    for photo in photos:
        image, mask = load(photo, long_side)
        hole = mask.expand_as(image) > 0
        for pyramid, plan in plans(stops).items():
            reference = None
            for name, overrides, n_iters in plan:
                row = {
                    "model": model,
                    "photo": photo,
                    "size": f"{image.shape[-1]}x{image.shape[-2]}",
                    "pyramid": pyramid,
                    "config": name,
                    "n_iters": n_iters,
                }
                key, saved = row_key(row), scratch / (row_key(row).replace("|", "_") + ".pt")
                if key in done and (reference is not None or saved.is_file()):
                    if reference is None:
                        reference = {**done[key], "image": torch.load(saved, weights_only=True)}
                    continue
                r = run_one(
                    generator,
                    image,
                    mask,
                    [f"pyramid.min_side={min_sides[pyramid]}", f"refiner.n_iters={n_iters}", *overrides],
                )
                if reference is None:
                    reference = {**r, "final_loss": r["final_loss"]}
                    torch.save(r["image"], saved)
                diff = (r["image"] - reference["image"]).abs()[hole]
                row.update(
                    {
                        "iterations": r["iterations"],
                        "seconds": r["seconds"],
                        "final_loss": r["final_loss"],
                        "ref_seconds": reference["seconds"],
                        "ref_loss": reference["final_loss"],
                        "ref_iterations": reference["iterations"],
                        "hole_mean_diff": float(diff.mean()),
                        "hole_max_diff": float(diff.max()),
                        "load": os.getloadavg()[0],
                    }
                )
                done[key] = row
                log(row)


def markdown_row(r: dict) -> str:
    forwards, ref = sum(r["iterations"]), max(1, sum(r["ref_iterations"]))
    return (
        f"| {r['model']} | {r['photo']} {r['size']} | {r['pyramid']} | {r['config']} | {r['n_iters']} | "
        f"{r['iterations'][1:]} | {100 * (1 - forwards / ref):.0f} % | {r['seconds']:.1f} | "
        f"{100 * (1 - r['seconds'] / r['ref_seconds']):.0f} % | {r['final_loss']:.5f} | "
        f"{100 * (r['final_loss'] / r['ref_loss'] - 1):+.2f} % | {r['hole_mean_diff']:.1e} | "
        f"{r['hole_max_diff']:.1e} |"
    )


HEADER = (
    "| model | photo | pyramid | config | n_iters | forwards per refined scale | forwards saved | s "
    "| time saved | final loss | vs 15-it off | hole mean abs diff | hole max abs diff |\n" + "|---" * 13 + "|"
)


def section(rows: list[dict]) -> str:
    when = datetime.datetime.now().isoformat(timespec="minutes")
    loads = [r["load"] for r in rows if "load" in r]
    load = f"1-min load {min(loads):.1f}-{max(loads):.1f}" if loads else "machine busy"
    return (
        f"{BEGIN}\n### Less work per image: early stopping and warm start (`benchmarks/less_work.py`)\n\n"
        f"`nice python benchmarks/less_work.py` (last run {when}, one thread, {load}: times are wall-clock "
        f"on a shared 2-core machine, compare rows of one photo). Each row against the same photo and "
        f"pyramid at 15 iterations with both switches off (the first row of its group).\n\n"
        + HEADER
        + "\n"
        + "\n".join(markdown_row(r) for r in rows)
        + f"\n{END}"
    )


def write_section(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the section of `path` between the markers, or put it before its '## All runs' (or at
    the end)."""
    old = path.read_text() if path.is_file() else ""
    if begin in old:
        new = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: text, old, flags=re.S)
    elif "\n## All runs" in old:
        new = old.replace("\n## All runs", "\n" + text + "\n\n## All runs", 1)
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=["default", "big-lama", "both"], default="both")
    parser.add_argument("--photos", default="ladybird", help=f"of {PHOTOS}, comma-separated")
    parser.add_argument("--big-lama-photos", default="ladybird")
    parser.add_argument("--big-lama-side", type=int, default=512)
    parser.add_argument(
        "--stops", default="0.01:2,0.05:1", help="early-stopping settings tol:patience, comma-separated"
    )
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "less_work.json")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "lama-refine-less-work")
    parser.add_argument("--rerun", action="store_true", help="run again what --results already has")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument(
        "--docs-only", action="store_true", help="rewrite the docs' section from --results, run nothing"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    args.scratch.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.results.read_text()) if args.results.is_file() and not args.rerun else {}
    if isinstance(old, list):  # the first version's format
        old = {row_key(r): r for r in old if not r.update(config=r["config"].replace("1e-2", "0.01"))}
    done = old  # results accumulate over runs
    stops = [(float(t), int(p)) for t, p in (item.split(":") for item in args.stops.split(",") if item)]
    print(HEADER, flush=True)

    def log(row: dict) -> None:
        print(markdown_row(row), flush=True)
        args.results.write_text(json.dumps(done, indent=1))  # nothing lost if a later run fails

    photos = [p for p in args.photos.split(",") if p]
    if args.docs_only:
        args.study = "none"
    if args.study in ("default", "both"):
        study("default", photos, None, {"2 scales": 512, "3 scales": 256}, stops, done, args.scratch, log)
    if args.study in ("big-lama", "both"):
        # 512 px long side: short side 320, so min_side 160 gives 2 scales and 80 gives 3.
        study(
            "big-lama",
            [p for p in args.big_lama_photos.split(",") if p],
            args.big_lama_side,
            {"2 scales": 160, "3 scales": 80},
            stops,
            done,
            args.scratch,
            log,
        )
    if not args.docs_only:
        args.results.write_text(json.dumps(done, indent=1))
    if not args.no_docs:
        rows = sorted(
            done.values(),
            key=lambda r: (
                r["model"] != "default",
                r["photo"],
                r["pyramid"],
                r["config"] != "off" or r["n_iters"] != 15,
                r["n_iters"] != 15,
                r["config"],
            ),
        )
        text = section(rows)
        for path in (REPO / "docs" / "benchmarks.md", REPO / "benchmarks" / "notes.md"):
            write_section(path, text)


if __name__ == "__main__":
    main()
