"""A large photo end to end: where a whole `lama-refine image= mask= out=` run's resident memory goes.

    python benchmarks/whole_run.py                         # 4000x3000, big-lama shape, 2 iterations
    python benchmarks/whole_run.py --configs defaults,glibc --n-iters 2 --no-docs

Each configuration is one real command-line run (`lama_refine.app.cli.entry`, so `perf.allocator=auto`
re-executes it under tcmalloc exactly as for a user) in a fresh process, with probes around the
stages of the one-image path: reading the photo and mask, the pyramid (pixel budget + levels),
the refinement, bringing the result back to the input's size, writing the PNG. After each stage
the process's resident set (VmRSS) and its peak so far (VmHWM) are recorded, so the table says
which stage raised the peak. Inputs (made once in `--scratch`): big-lama-shaped random weights
(`bench.benchmark_generator`, written as `.safetensors` + `.yaml`), a synthetic photo-like
4000x3000 PNG and one 260x200 px elliptical hole (`bench.small_hole`). Results go to
`--results` (JSON) and between the `whole-run` markers of docs/benchmarks.md and
benchmarks/notes.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

BEGIN, END = "<!-- whole-run:begin -->", "<!-- whole-run:end -->"
# name -> command-line overrides
CONFIGS: dict[str, list[str]] = {
    "defaults": [],
    "glibc": ["perf.allocator=glibc"],
    "defaults+untiled": ["perf.tile_rows=null"],
    # the defaults before perf.allocator=auto, perf.tile_rows=64 and perf.malloc_trim=true
    "glibc+untiled": ["perf.allocator=glibc", "perf.tile_rows=null", "perf.malloc_trim=false"],
    "crop": ["region=crop"],
}
STAGES = ("read", "model", "pyramid", "refine", "match_size", "write")


def status() -> dict[str, float]:
    """VmRSS and VmHWM of this process, GiB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            found[line.split(":")[0]] = int(line.split()[1]) / 2**20
    return found


def child(args: argparse.Namespace) -> None:
    """One run through the CLI, with probes; prints one JSON line (the re-exec keeps stdout)."""
    from lama_refine import pipeline
    from lama_refine.app import cli
    from lama_refine.batch import runner as batch
    from lama_refine.parts.pyramid import PyramidBuilder
    from lama_refine.parts.refine import Refiner

    marks: list[tuple[str, float, float, float]] = []
    start = time.perf_counter()

    def mark(stage: str) -> None:
        s = status()
        marks.append((stage, time.perf_counter() - start, s["VmRSS"], s["VmHWM"]))

    def probe(owner, name: str, stage: str) -> None:
        """Mark `stage` after each call of `owner.name`; for a class, also of every subclass's own
        `name` (the configured parts are subclasses of the abstract ones)."""
        for holder in [owner, *all_subclasses(owner)] if isinstance(owner, type) else [owner]:
            if isinstance(owner, type) and name not in holder.__dict__:
                continue
            setattr(
                holder,
                name,
                wrapped(getattr(holder, name) if not isinstance(holder, type) else holder.__dict__[name], stage, mark),
            )

    mark("imports")
    probe(batch, "load_inputs", "read")
    probe(cli, "build_inpainter", "model")
    probe(PyramidBuilder, "build", "pyramid")
    probe(Refiner, "refine", "refine")
    probe(pipeline, "match_size", "match_size")
    probe(batch, "write_result", "write")
    sys.argv = ["lama-refine", *json.loads(args.child)]
    try:
        cli.entry()
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    mark("end")
    print(json.dumps({"exit": code, "marks": marks, "ld_preload": os.environ.get("LD_PRELOAD", "")}), flush=True)


def all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def wrapped(function, stage: str, mark):
    def probed(*a, **k):
        result = function(*a, **k)
        mark(stage)
        return result

    return probed


def make_inputs(scratch: Path, h: int, w: int) -> dict[str, Path]:
    """Model, photo and mask in `scratch` (made once)."""
    import numpy as np
    from bench import benchmark_generator, small_hole, synthetic_photo
    from PIL import Image

    from lama_refine.models import BIG_LAMA
    from lama_refine.train.loop import export_generator

    scratch.mkdir(parents=True, exist_ok=True)
    paths = {
        "model": scratch / "big-lama-random.safetensors",
        "image": scratch / f"photo-{w}x{h}.png",
        "mask": scratch / f"photo-{w}x{h}_mask.png",
    }
    if not paths["model"].is_file():
        export_generator(benchmark_generator("big-lama"), BIG_LAMA, paths["model"].with_suffix(""), fp16=False)
    if not paths["image"].is_file():
        photo = synthetic_photo(h, w, seed=0)[0].permute(1, 2, 0).numpy()
        Image.fromarray((photo * 255).round().astype(np.uint8)).save(paths["image"])
        Image.fromarray((small_hole(h, w)[0, 0].numpy() * 255).astype(np.uint8)).save(paths["mask"])
    return paths


def run(name: str, overrides: list[str], paths: dict[str, Path], out: Path, n_iters: int) -> dict:
    from lama_refine.perf.allocator import REEXEC_MARK

    argv = [
        f"image={paths['image']}",
        f"mask={paths['mask']}",
        f"out={out}",
        f"model.path={paths['model']}",
        f"refiner.n_iters={n_iters}",
        "progress=false",
        "overwrite=true",
        *overrides,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", REEXEC_MARK)}
    env["PYTHONPATH"] = str(REPO)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(argv)], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"config": name, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    record = json.loads(lines[-1])
    peaks = {stage: hwm for stage, _, _, hwm in record["marks"]}
    return {
        "config": name,
        "overrides": overrides,
        "wall_s": wall,
        "exit": record["exit"],
        "allocator": "tcmalloc" if "tcmalloc" in record["ld_preload"] else "system",
        "marks": record["marks"],
        "peak_gib": max(peaks.values()),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load": os.getloadavg()[0],
    }


def markdown(rows: list[dict], size: str, n_iters: int) -> str:
    head = (
        "| config | allocator | wall s | peak RSS GiB | "
        + " | ".join(f"peak after {s}" for s in STAGES)
        + " | RSS at the end | load |"
    )
    lines = [head, "|" + "---|" * (6 + len(STAGES))]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error']} |" + " |" * (5 + len(STAGES)))
            continue
        after = {}
        for stage, _, _, hwm in r["marks"]:
            after.setdefault(stage, hwm)  # the first time (region=crop runs the pyramid per crop)
        cells = [f"{after[s]:.2f}" if s in after else "-" for s in STAGES]
        lines.append(
            f"| {r['config']} | {r['allocator']} | {r['wall_s']:.0f} | **{r['peak_gib']:.2f}** | "
            + " | ".join(cells)
            + f" | {r['marks'][-1][2]:.2f} | {r['load']:.1f} |"
        )
    return (
        f"{BEGIN}\n### A {size} photo end to end (`python benchmarks/whole_run.py`)\n\n"
        f"One `lama-refine image= mask= out=` run per row (fresh process, big-lama-shaped weights, one "
        f'260x200 px hole, {n_iters} iterations, default pixel budget 1.8 MP). "peak after X": the '
        f"process's peak resident set (VmHWM, GiB) when stage X ended; the peak column is the whole run's.\n\n"
        + "\n".join(lines)
        + f"\n{END}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="3000x4000", help="HxW")
    parser.add_argument("--n-iters", type=int, default=2)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "lama-refine-whole-run")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "whole_run.json")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from less_work import write_section

    h, w = (int(v) for v in args.size.split("x"))
    paths = make_inputs(args.scratch, h, w)
    # results accumulate over runs (a config run again replaces its row), kept in CONFIGS' order
    done = {r["config"]: r for r in json.loads(args.results.read_text())} if args.results.is_file() else {}
    for name in [c for c in args.configs.split(",") if c]:
        done[name] = run(name, CONFIGS[name], paths, args.scratch / "out" / f"{name}.png", args.n_iters)
        print(json.dumps({k: v for k, v in done[name].items() if k != "marks"}), flush=True)
        rows = [done[c] for c in CONFIGS if c in done]
        args.results.write_text(json.dumps(rows, indent=1))
    text = markdown([done[c] for c in CONFIGS if c in done], f"{w}x{h}", args.n_iters)
    print(text)
    if not args.no_docs:
        for path in (REPO / "docs" / "benchmarks.md", REPO / "benchmarks" / "notes.md"):
            write_section(path, text, BEGIN, END)


if __name__ == "__main__":
    main()
