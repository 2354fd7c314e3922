"""What the rerun rules cost (issue 21): a rerun of a folder whose jobs are all done, before this
change (main's code: the manifest's config hash only) and after it (photo, mask and model digests,
claims).

    nice python benchmarks/rerun.py                          # 10,000 small jobs and 200 photos of 12 MP
    nice python benchmarks/rerun.py --jobs 2000 --photos 20  # a quick look

Studies:
- `small`: `--jobs` jobs of 8x8 px (photo + mask PNGs), all done: the cost per job of judging it.
- `photos`: `--photos` JPEGs of 4000x3000 (random-ish, ~3.4 MB each) with PNG masks, all done,
  where reading the photos would be the cost: the rerun after the run that made them (size and
  mtime unchanged: nothing is read), the first rerun after every photo and mask was touched (same
  bytes, new mtime, as after a copy: all are re-hashed) and the reruns after that (trusted again).

The "done" state is made once by the current code with the network replaced by the identity (the
output is the photo; everything else, the reads, the stamps, the atomic writes, the manifest, is
the real run's). For the 12 MP photos the output is a copy of the photo's file (a `.jpg` of its
size) and nothing is decoded: decoding and encoding 200 photos of 12 MP takes most of an hour on
a busy 2-core machine, and a rerun reads neither. Main's manifest is derived from it by main's own
code (its config hash, without
the new fields): the lines main would have written for the same outputs. "before" runs main's
`cli.run` from a clean export (`git archive main`), "after" this checkout's; each rerun is a fresh
process and its time is the whole process (imports included) and its `run()` alone, the median of
`--repeats`. Everything is made under a temporary folder and deleted at the end. The table is
printed and written into docs/benchmarks.md and benchmarks/notes.md between the `rerun` markers.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- rerun:begin -->", "<!-- rerun:end -->"

# Runs inside each measured process, with PYTHONPATH at main's export or this checkout.
DRIVER = r"""
import json, sys, time
mode, indir, outdir = sys.argv[1:4]
from lama_refine.config import compose
from lama_refine import batch
from lama_refine.app.cli import run
cfg = compose([f"indir={indir}", f"outdir={outdir}", "progress=false", "refine=false", "out_ext=" + sys.argv[4]])
if mode.startswith("make"):
    from lama_refine.parts.refine import Refinement
    batch.Batch.inpaint = lambda self, inputs, job: (Refinement(image=inputs.image), batch.Attempts(), [])
if mode == "make-copy":  # 12 MP photos: the output is a copy of the photo, nothing is decoded or encoded
    import shutil, torch
    from lama_refine.io import Inputs, write_atomic
    current = {}
    def load_inputs(job, rule):
        current["image"] = job.image
        return Inputs(torch.zeros(1, 3, 1, 1), torch.ones(1, 1, 1, 1), 8)
    batch.load_inputs = load_inputs
    batch.write_result = lambda out, image, **kw: write_atomic(out, lambda tmp: shutil.copyfile(current["image"], tmp))
if mode == "main-manifest":  # main's lines for the same outputs: its config hash, none of the new fields
    new = ("results_version", "model_sha256", "image_stamp", "mask_stamp")
    lines = [json.loads(l) for l in open(sys.argv[5])]
    with open(f"{outdir}/manifest.jsonl", "w") as f:
        for r in lines:
            if r["status"] == "done":
                f.write(json.dumps({**{k: v for k, v in r.items() if k not in new},
                                    "config_hash": batch.config_hash(cfg)}) + "\n")
    sys.exit(0)
import logging
logging.basicConfig(level=logging.WARNING)
start = time.perf_counter()
summary = run(cfg)
print(json.dumps({"run_s": time.perf_counter() - start, "done": len(summary.done), "skipped": len(summary.skipped),
                  "redone": len(getattr(summary, "redone", []))}))
"""


def load() -> float:
    return os.getloadavg()[0]


def drive(root: Path, mode: str, indir: Path, outdir: Path, ext: str, *extra: str, home: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "LAMA_REFINE_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, mode, str(indir), str(outdir), ext, *extra],
        env=env,
        cwd=indir.parent,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} under {root} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    return {**result, "wall_s": wall}


def small_folder(indir: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:6] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    mask_bytes = buf.getvalue()
    for i in range(n):
        sub = indir / f"d{i // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(sub / f"p{i:05d}.png")
        (sub / f"p{i:05d}_mask.png").write_bytes(mask_bytes)


def photo_folder(indir: Path, n: int, size: tuple[int, int]) -> None:
    """`n` distinct 12 MP JPEGs without encoding 12 MP `n` times: a few encoded photos, each copy
    made distinct by a JPEG comment segment (COM) after the start marker."""
    import numpy as np
    from PIL import Image

    w, h = size
    rng = np.random.default_rng(0)
    bases = []
    for _k in range(4):
        small = Image.fromarray((rng.random((h // 40, w // 40, 3)) * 255).astype(np.uint8)).resize(
            (w, h), Image.BICUBIC
        )
        noisy = np.asarray(small).astype(np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
        buf = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        bases.append(buf.getvalue())
    mask = np.zeros((h, w), np.uint8)
    mask[h // 3 : h // 3 + 200, w // 3 : w // 3 + 260] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    indir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        comment = f"photo {i}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        base = bases[i % len(bases)]
        (indir / f"photo{i:03d}.jpg").write_bytes(base[:2] + segment + base[2:])
        (indir / f"photo{i:03d}_mask.png").write_bytes(buf.getvalue())


def reruns(root: Path, indir: Path, outdir: Path, ext: str, repeats: int, home: Path) -> list[dict]:
    return [drive(root, "rerun", indir, outdir, ext, home=home) for _ in range(repeats)]


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def row(study: str, what: str, runs: list[dict], n: int) -> dict:
    return {
        "study": study,
        "what": what,
        "n": n,
        "wall_s": median(runs, "wall_s"),
        "run_s": median(runs, "run_s"),
        "repeats": len(runs),
        "skipped": runs[0]["skipped"],
        "done": runs[0]["done"] + runs[0]["redone"],
        "load": load(),
    }


def touch_all(indir: Path) -> None:
    later = time.time() + 10
    for p in indir.iterdir():
        os.utime(p, (later, later))


def study(name: str, make_inputs, n: int, ext: str, repeats: int, base: Path, work: Path) -> list[dict]:
    indir, outdir, home = work / name / "in", work / name / "out", work / name / "home"
    make_inputs(indir)
    made = drive(REPO, "make-copy" if name == "photos" else "make", indir, outdir, ext, home=home)
    print(f"{name}: made {made['done']} outputs in {made['wall_s']:.0f} s", flush=True)
    after_manifest = outdir / "manifest.jsonl"
    kept = work / name / "manifest.after.jsonl"
    shutil.copy(after_manifest, kept)
    rows = []
    drive(base, "main-manifest", indir, outdir, ext, str(kept), home=home)
    rows.append(row(name, "before (main)", reruns(base, indir, outdir, ext, repeats, home), n))
    print(rows[-1], flush=True)
    shutil.copy(kept, after_manifest)
    first = reruns(REPO, indir, outdir, ext, repeats, home)
    rows.append(row(name, "after", first, n))
    print(rows[-1], flush=True)
    if name == "photos":
        touch_all(indir)
        touched = reruns(REPO, indir, outdir, ext, 1, home)
        rows.append(row(name, "after, first rerun after touching every photo and mask (all re-hashed)", touched, n))
        print(rows[-1], flush=True)
        rows.append(row(name, "after, the reruns after that", reruns(REPO, indir, outdir, ext, repeats, home), n))
        print(rows[-1], flush=True)
    return rows


HEADER = (
    "| folder | code | jobs | skipped | done | rerun, whole process s | `run()` s | per job ms | load |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def markdown(rows: list[dict]) -> str:
    lines = [HEADER]
    for r in rows:
        lines.append(
            f"| {r['study']} | {r['what']} | {r['n']} | {r['skipped']} | {r['done']} | {r['wall_s']:.2f} | "
            f"{r['run_s']:.2f} | {1000 * r['run_s'] / r['n']:.2f} | {r['load']:.1f} |"
        )
    return "\n".join(lines)


def section(rows: list[dict], args) -> str:
    when = datetime.datetime.now().isoformat(timespec="minutes")
    ratios = []
    for name in ("small", "photos"):
        before = next((r for r in rows if r["study"] == name and r["what"] == "before (main)"), None)
        after = next((r for r in rows if r["study"] == name and r["what"] == "after"), None)
        if before and after:
            ratios.append(
                f"{name}: after / before {after['wall_s'] / before['wall_s']:.2f}x whole process, "
                f"{after['run_s'] / before['run_s']:.2f}x `run()`"
            )
    return (
        f"{BEGIN}\n### Rerunning a finished folder (`benchmarks/rerun.py`)\n\n"
        f"`nice python benchmarks/rerun.py --jobs {args.jobs} --photos {args.photos} --repeats {args.repeats}` "
        f"(last run {when}; medians of fresh processes on a shared 2-core machine, `load` its 1-min load "
        f"average). `small`: {args.jobs} jobs of 8x8 px, all done; `photos`: {args.photos} JPEGs of "
        f"{args.size} px (~3.4 MB each at 4000x3000), all done, outputs `.jpg`. "
        f'"before" is main\'s code before the rerun rules '
        f'(config hash only), "after" this one (photo, mask and model digests, claims).\n\n'
        + markdown(rows)
        + "\n\n"
        + "; ".join(ratios)
        + f".\n{END}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", type=Path, help="main's code (default: `git archive main` into a temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="lama-refine-rerun-") as tmp:
        work = Path(tmp)
        base = args.base
        if base is None:
            base = work / "main"
            base.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", "main"], check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        rows = []
        if args.jobs:
            rows += study("small", lambda d: small_folder(d, args.jobs), args.jobs, ".png", args.repeats, base, work)
        if args.photos:
            rows += study(
                "photos", lambda d: photo_folder(d, args.photos, size), args.photos, ".jpg", args.repeats, base, work
            )
    text = section(rows, args)
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from less_work import write_section

        for path in (REPO / "docs" / "benchmarks.md", REPO / "benchmarks" / "notes.md"):
            write_section(path, text, BEGIN, END)


if __name__ == "__main__":
    main()
