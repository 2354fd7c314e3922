"""Benchmark refinement: wall time per image, per scale and per iteration, peak memory, and the
output's difference to the faithful baseline, for each size x configuration.

Every run is a fresh child process (peak RSS is per process), watched by the parent, which kills
it above `--cap-gb` of resident memory; runs whose *predicted* peak (lama_refine.memory) is over
the cap are not started. Results accumulate as JSON in `--results` and `docs/benchmarks.md` is
rewritten from all of them, so a plan can be run in pieces.

    python benchmarks/bench.py --plan smoke            # tiny sizes, a minute: does everything run
    python benchmarks/bench.py --plan cpu              # the CPU table of docs/benchmarks.md
    python benchmarks/bench.py --sizes 1mp --configs lean,lean+bf16 --n-iters 4

Timings are wall-clock on whatever else the machine is doing: the load average is recorded with
each run; compare configurations measured in the same session and quote ratios.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name -> (height, width)
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (192, 256),
    "0.25mp": (432, 576),
    "0.5mp": (736, 736),  # square: the smallest ~0.5 MP size that gets 2 scales at min_side 512
    "1mp": (768, 1152),  # the anchor: 1152x768
    "1.8mp": (1125, 1600),  # the default pixel budget
    "4k": (2160, 3840),
    "12mp": (3000, 4000),
}

# name -> config overrides (on top of the app's defaults)
# The faithful baseline is the original's code path *and* the original's allocator behaviour.
FAITHFUL = ["perf.lean_backward=false", "perf.mmap_threshold_kb=null"]
CONFIGS: dict[str, list[str]] = {
    "faithful": FAITHFUL,
    "faithful+checkpointing": FAITHFUL + ["perf.checkpointing=true"],
    "lean": [],
    "lean+mmap128": ["perf.mmap_threshold_kb=128"],
    "lean+bf16": ["perf.amp=bf16"],
    "lean+thp": [],  # THP_MEM_ALLOC_ENABLE=1: torch asks for transparent huge pages (fewer page faults)
    "lean+jemalloc": ["perf.allocator=jemalloc"],  # run with LD_PRELOAD (lama_refine.allocator)
    "lean+tcmalloc": ["perf.allocator=tcmalloc"],
    "lean+bf16+jemalloc": ["perf.amp=bf16", "perf.allocator=jemalloc"],
    "lean+bf16+tcmalloc": ["perf.amp=bf16", "perf.allocator=tcmalloc"],
    "lean+tiled": ["perf.tile_rows=64"],
    "lean+tcmalloc+tiled": ["perf.allocator=tcmalloc", "perf.tile_rows=64"],
    "lean+tcmalloc+banded-front": ["perf.allocator=tcmalloc", "perf.tile_rows=64", "perf.tile_tail=false"],
    "lean+bf16+tcmalloc+tiled": ["perf.amp=bf16", "perf.allocator=tcmalloc", "perf.tile_rows=64"],
    "lean+channels_last": ["perf.channels_last=true"],
    "lean+checkpointing": ["perf.checkpointing=true"],
    "lean+compile": ["perf.compile=true"],
    "crop": ["region=crop"],
    "crop+bf16": ["region=crop", "perf.amp=bf16"],
}

# The configuration whose output a run is compared with (same image, mask and model), in order of
# preference: the faithful baseline where it fits the memory cap; faithful+checkpointing recomputes
# the same ops (checked equal to faithful where both run); else the lean backward.
REFERENCES = ("faithful", "faithful+checkpointing", "lean")


@dataclass
class Spec:
    size: str
    config: str
    model: str = "big-lama"  # big-lama: big-lama-shaped random weights; default: the built-in model
    n_iters: int = 15
    mask: str = "medium"  # medium / thin / thick: LaMa's families; small-hole, hole-N: one ellipse (HOLES)
    extra: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        extra = ("+" + "+".join(self.extra)) if self.extra else ""
        return f"{self.model}_{self.size}_{self.mask}_it{self.n_iters}_{self.config}{extra}".replace("/", "_")

    @property
    def case(self) -> str:
        """Runs with the same case see the same inputs and settings but for `perf.*`, and can be compared."""
        inputs = [e for e in self.extra if not e.startswith("perf.")]
        extra = ("+" + "+".join(inputs)) if inputs else ""
        return f"{self.model}_{self.size}_{self.mask}_it{self.n_iters}{extra}"

    @property
    def threads(self) -> str:
        return next((e for e in self.extra if e.startswith("perf.threads=")), "")


ONE_THREAD = ["perf.threads=1"]  # see benchmarks/notes.md: 2 threads on 2 shared cores oversubscribe

PLANS: dict[str, list[Spec]] = {
    "smoke": [Spec("tiny", c, n_iters=3, extra=["pyramid.min_side=96"])
              for c in ("faithful", "lean", "lean+bf16", "lean+channels_last", "faithful+checkpointing", "crop")],
    # The CPU table of docs/benchmarks.md, most important first (about an hour on a quiet 2-core machine).
    "cpu": (
        [Spec("0.5mp", c, n_iters=3, extra=ONE_THREAD) for c in ("faithful", "lean", "lean+bf16",
                                                                 "lean+mmap128", "lean+channels_last")]
        + [Spec("1mp", c, n_iters=2, extra=ONE_THREAD) for c in ("lean", "lean+bf16")]
        + [Spec("12mp", c, n_iters=2, mask="small-hole", extra=ONE_THREAD) for c in ("lean", "crop")]
        + [Spec("1.8mp", "lean", n_iters=2, extra=ONE_THREAD)]
        + [Spec("0.5mp", "faithful+checkpointing", n_iters=3, extra=ONE_THREAD)]
        + [Spec("4k", "lean+bf16", n_iters=2, extra=ONE_THREAD + ["pyramid.px_budget=9000000"])]
    ),
    # On a quiet machine: both cores, torch's default threads.
    "quiet": [Spec("0.5mp", c, n_iters=3) for c in ("faithful", "lean", "lean+mmap128", "lean+bf16",
                                                    "lean+thp")],
    # perf.allocator on a quiet machine (both cores): memory at speed parity, fp32 and bf16.
    "allocator": ([Spec("0.5mp", c, n_iters=3) for c in ("faithful", "lean", "lean+jemalloc", "lean+tcmalloc",
                                                        "lean+bf16", "lean+bf16+jemalloc", "lean+bf16+tcmalloc")]
                  + [Spec("1mp", c, n_iters=2) for c in ("lean", "lean+jemalloc", "lean+bf16+jemalloc",
                                                         "lean+tcmalloc", "lean+bf16+tcmalloc")]),
    # perf.tile_rows: the full-resolution tail in bands (quiet machine, both cores).
    "tiled": ([Spec("0.5mp", c, n_iters=3) for c in ("lean+tiled", "lean+tcmalloc+tiled", "lean+tcmalloc+banded-front")]
              + [Spec("1mp", c, n_iters=2) for c in ("faithful", "lean+tcmalloc+tiled", "lean+bf16+tcmalloc+tiled",
                                                     "lean+tcmalloc+banded-front")]),
    # region=crop against whole-photo refinement over hole sizes (12 MP photo, quiet machine).
    "crop": ([Spec("12mp", "lean", n_iters=2, mask=m) for m in ("small-hole", "hole-160")]
             + [Spec("12mp", "crop", n_iters=2, mask=m) for m in ("hole-160", "hole-200", "small-hole", "hole-400")]),
    "compile": [Spec("0.25mp", c, n_iters=3, extra=ONE_THREAD) for c in ("lean", "lean+compile")],
    "default-model": [Spec("1mp", c, model="default", n_iters=3, extra=ONE_THREAD)
                      for c in ("faithful+checkpointing", "lean", "lean+bf16")],
}


# ---------------------------------------------------------------------------------------------
# Child: one run
# ---------------------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """VmHWM of this process: the peak resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return -1


def synthetic_photo(h: int, w: int, seed: int):
    """A photo-like (1, 3, h, w) image: smooth colour fields, edges and fine texture."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    image = torch.zeros(1, 3, h, w)
    for cells, weight in ((4, 0.5), (16, 0.3), (64, 0.15)):
        field_ = torch.rand(1, 3, cells, max(1, cells * w // h), generator=g)
        image += weight * F.interpolate(field_, size=(h, w), mode="bicubic", align_corners=False)
    image += 0.05 * torch.rand(1, 3, h, w, generator=g)
    return image.clamp_(0, 1)


# mask name -> (width, height) of one elliptical hole: an object to remove from a photo
HOLES = {"small-hole": (260, 200), "hole-160": (160, 124), "hole-200": (200, 154), "hole-400": (400, 308)}


def small_hole(h: int, w: int, size: tuple[int, int] = HOLES["small-hole"]):
    """One `size` = (width, height) px elliptical hole centred at (0.6 h, 0.4 w)."""
    import torch

    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    inside = ((ys - 0.6 * h) / (size[1] / 2)) ** 2 + ((xs - 0.4 * w) / (size[0] / 2)) ** 2 <= 1
    return inside.float()[None, None]


def benchmark_generator(model: str):
    """big-lama-shaped random weights with BatchNorm statistics calibrated on one batch and the
    last conv scaled to a pre-sigmoid std of 1 (so the sigmoid is not saturated, as in a trained
    model), or the built-in model."""
    import torch

    from lama_refine.config import DEFAULT_MODEL, load_model
    from lama_refine.models import BIG_LAMA, build_generator

    if model == "default":
        if not DEFAULT_MODEL.is_file():
            raise FileNotFoundError(f"{DEFAULT_MODEL} is absent")
        return load_model({"path": None})
    torch.manual_seed(0)
    generator = build_generator(BIG_LAMA)
    for m in generator.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one batch sets the statistics
    generator.train()
    x = synthetic_photo(128, 192, 1)
    hole = torch.zeros(1, 1, 128, 192)
    hole[..., 32:96, 48:144] = 1
    batch = torch.cat([x * (1 - hole), hole], dim=1)
    with torch.no_grad():
        generator(batch)
        generator.eval()
        last_conv = [m for m in generator.model if isinstance(m, torch.nn.Conv2d)][-1]
        pre_sigmoid = generator.model[:-1](batch)
        last_conv.weight /= pre_sigmoid.std()
        last_conv.bias.zero_()
    return generator.requires_grad_(False)


def run_child(spec: Spec, out_dir: Path) -> dict:
    if "thp" in spec.config:
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"  # read by torch at its first large allocation
    import numpy as np
    import torch

    from lama_refine.config import build_inpainter, compose
    from lama_refine.train.masks import seeded_mask

    h, w = SIZES[spec.size]
    image = synthetic_photo(h, w, seed=0)
    if spec.mask in HOLES:
        mask = small_hole(h, w, HOLES[spec.mask])
    else:
        mask = torch.from_numpy(seeded_mask(h, w, spec.mask, seed=0))[None, None]
    generator = benchmark_generator(spec.model)
    cfg = compose(["indir=x", "outdir=y", "progress=false", "devices=[cpu]", f"refiner.n_iters={spec.n_iters}",
                   *CONFIGS[spec.config], *spec.extra])
    inpainter = build_inpainter(cfg, generator=generator)
    device = inpainter.devices[-1]

    stamps: list[tuple[int, int, float]] = []  # (scale, iteration, time after that forward)

    def progress(scale, n_scales, it, n_iters, loss):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append((scale, it, time.perf_counter()))

    inpainter.refiner.progress = progress
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = peak_rss_bytes()
    start = time.perf_counter()
    result = inpainter.run(image, mask)
    total = time.perf_counter() - start
    np.save(out_dir / f"{spec.key}.npy", result.image[0].numpy())
    np.save(out_dir / f"{spec.case}_mask.npy", mask[0, 0].numpy())

    iterations, scale_times, previous_end = [], [], start
    for scale in sorted({s for s, _, _ in stamps}):
        times = [t for s, _, t in stamps if s == scale]
        scale_times.append(times[-1] - previous_end)
        previous_end = times[-1]
        iterations += [b - a for a, b in zip(times, times[1:])]  # backward + step + next forward
    return {
        "total_s": total,
        "scale_s": scale_times,
        "iteration_s": iterations,
        "iteration_median_s": float(np.median(iterations)) if iterations else None,
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_run_bytes": rss_before,
        "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "n_scales": len(scale_times),
        "working_size": list(result.image.shape[-2:]),
    }


# ---------------------------------------------------------------------------------------------
# Parent: plan, watchdog, tables
# ---------------------------------------------------------------------------------------------


def rss_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def perf_from_overrides(overrides: list[str]):
    """The PerfConfig the app builds from these command-line overrides (the one perf path:
    compose, then `config.perf_config`); keys other than `perf.*` do not matter to it."""
    from lama_refine.config import compose, perf_config

    return perf_config(compose([o for o in overrides if o.lstrip("+").startswith("perf.")]))


def predicted_peak(spec: Spec) -> float | None:
    """Predicted peak RSS (bytes) of one run from the memory model (`lama_refine.memory`), after the
    pixel budget; crops are estimated as the whole photo, an upper bound."""
    import torch

    from lama_refine.config import load_model
    from lama_refine.memory import estimate_peak
    from lama_refine.models import BIG_LAMA, build_generator

    overrides = CONFIGS[spec.config] + spec.extra
    if spec.model == "big-lama":
        with torch.device("meta"):
            generator = build_generator(BIG_LAMA)
    else:
        generator = load_model({"path": None})
    budget = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("pyramid.px_budget=")), 1_800_000)
    h, w = SIZES[spec.size]
    if h * w > budget:
        r = math.sqrt(budget / (h * w))
        h, w = int(h * r), int(w * r)
    return estimate_peak(generator, (h, w), perf_from_overrides(overrides), "cpu", input_size=SIZES[spec.size]).total


def launch(spec: Spec, out_dir: Path, cap_bytes: int, timeout_s: float) -> dict:
    """Run `spec` in a child process; kill it above `cap_bytes` resident or after `timeout_s`."""
    cmd = [sys.executable, __file__, "--child", json.dumps(asdict(spec)), "--scratch", str(out_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    allocator = next((o.split("=", 1)[1] for o in CONFIGS[spec.config] + spec.extra
                      if o.startswith("perf.allocator=")), None)
    if allocator:  # the CLI re-executes itself with the library preloaded; a child is started with it
        from lama_refine.allocator import normalise, preload_env
        env = preload_env(normalise(allocator), env) or env  # not installed: the child warns, runs on glibc
    load_before = os.getloadavg()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak_seen, killed, start = 0, None, time.time()
    while proc.poll() is None:
        peak_seen = max(peak_seen, rss_of(proc.pid))
        if peak_seen > cap_bytes:
            killed = f"killed: resident memory above the {cap_bytes / 2**30:.1f} GiB cap"
        elif time.time() - start > timeout_s:
            killed = f"killed: over {timeout_s:.0f} s"
        if killed:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    record = {"spec": asdict(spec), "key": spec.key, "case": spec.case, "load_before": load_before,
              "load_after": os.getloadavg(), "date": datetime.datetime.now().isoformat(timespec="seconds")}
    if killed or proc.returncode != 0:
        record["error"] = killed or stderr.strip().splitlines()[-1] if (killed or stderr.strip()) else "failed"
        record["watchdog_peak_rss_bytes"] = peak_seen
        return record
    record.update(json.loads(stdout.strip().splitlines()[-1]))
    return record


def add_diffs(record: dict, out_dir: Path, results: dict[str, dict]) -> None:
    """max / mean |diff| against the first reference run of the same case, overall and in the hole."""
    import numpy as np

    ours_path = out_dir / f"{record['key']}.npy"
    if "error" in record or not ours_path.is_file():
        return
    threads = Spec(**record["spec"]).threads
    for ref_config in REFERENCES:
        # the reference of the same case, with the same thread count if there is one (the
        # summation order, and so the last bits, depend on it)
        candidates = [r for r in results.values() if r["case"] == record["case"] and "error" not in r
                      and r["spec"]["config"] == ref_config and r["key"] != record["key"]
                      and (out_dir / f"{r['key']}.npy").is_file()]
        candidates.sort(key=lambda r: Spec(**r["spec"]).threads != threads)
        ref = candidates[0] if candidates else None
        if ref is None or not (out_dir / f"{ref['key']}.npy").is_file():
            continue
        ours, theirs = np.load(ours_path), np.load(out_dir / f"{ref['key']}.npy")
        if ours.shape != theirs.shape:
            continue
        diff = np.abs(ours.astype(np.float64) - theirs)
        hole = np.load(out_dir / f"{record['case']}_mask.npy") > 0
        record["reference"] = ref_config
        record["max_abs_diff"] = float(diff.max())
        record["mean_abs_diff"] = float(diff.mean())
        record["hole_mean_abs_diff"] = float(diff[:, hole].mean()) if hole.any() else 0.0
        return


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    mem = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags, "memory_bytes": mem,
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def gib(x: float | None) -> str:
    return "" if x is None else f"{x / 2**30:.2f}"


def fmt(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def sci(x: float | None) -> str:
    return "" if x is None else f"{x:.1e}"


def table(results: list[dict]) -> str:
    """One markdown table row per run, grouped by case."""
    lines = ["| model | size | mask | iters | config | total s | per scale s | s/iter (median) | peak RSS GiB "
             "| predicted GiB | vs | max abs diff | mean abs diff | hole mean abs diff | load 1-min |",
             "|" + "---|" * 15]
    for r in results:
        s = dict(r["spec"])
        s["config"] = " ".join([s["config"], *s["extra"]])
        h, w = SIZES[s["size"]]
        size = f"{s['size']} ({w}x{h})"
        if "error" in r:
            lines.append(f"| {s['model']} | {size} | {s['mask']} | {s['n_iters']} | {s['config']} | "
                         f"{r['error']} | | | {gib(r.get('watchdog_peak_rss_bytes'))} | "
                         f"{gib(r.get('predicted_peak_bytes'))} | | | | | {fmt(r['load_before'][0])} |")
            continue
        lines.append(
            f"| {s['model']} | {size} | {s['mask']} | {s['n_iters']} | {s['config']} | {fmt(r['total_s'])} | "
            f"{' + '.join(fmt(t) for t in r['scale_s'])} | {fmt(r['iteration_median_s'], 2)} | "
            f"{gib(r['peak_rss_bytes'])} | {gib(r.get('predicted_peak_bytes'))} | {r.get('reference', '')} | "
            f"{sci(r.get('max_abs_diff'))} | {sci(r.get('mean_abs_diff'))} | {sci(r.get('hole_mean_abs_diff'))} | "
            f"{fmt(r['load_before'][0])} |")
    return "\n".join(lines)


def write_markdown(path: Path, results: list[dict], info: dict, notes: str) -> None:
    header = (f"# Benchmarks\n\nGenerated by `benchmarks/bench.py` (rerun it to refresh; the prose around the "
              f"tables lives in `benchmarks/notes.md`).\n\n"
              f"Machine: {info['cpu']}, {info['cores']} cores (AVX-512 bf16: {info['avx512_bf16']}), "
              f"{info['memory_bytes'] / 2**30:.0f} GiB; torch {info['torch']}, Python {info['python']}; "
              f"CUDA: {info['cuda'] or 'none'}. Last run: {max(r['date'] for r in results)}.\n\n")
    path.write_text(header + notes + "\n\n## All runs\n\n" + table(results) + "\n")


def skip_record(spec: Spec, predicted: float, cap: int) -> dict:
    return {"spec": asdict(spec), "key": spec.key, "case": spec.case,
            "error": f"not run: predicted {predicted / 2**30:.1f} GiB > {cap / 2**30:.1f} GiB cap",
            "predicted_peak_bytes": predicted, "load_before": os.getloadavg(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(PLANS), help="a predefined list of runs")
    parser.add_argument("--sizes", default="", help=f"comma-separated, of {sorted(SIZES)}")
    parser.add_argument("--configs", default="", help=f"comma-separated, of {sorted(CONFIGS)}")
    parser.add_argument("--model", default="big-lama", choices=["big-lama", "default"])
    parser.add_argument("--mask", default="medium", choices=["medium", "thin", "thick", *HOLES])
    parser.add_argument("--n-iters", type=int, default=15)
    parser.add_argument("--extra", default="", help="more overrides for every run, space-separated")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each spec (fresh process each)")
    parser.add_argument("--cap-gb", type=float, default=8.0, help="kill a run above this resident memory")
    parser.add_argument("--timeout", type=float, default=3600.0, help="kill a run after this many seconds")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "lama-refine-bench")
    parser.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--rerun", action="store_true", help="run specs that already have a result")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = Spec(**json.loads(args.child))
        print(json.dumps(run_child(spec, args.scratch)))
        return

    args.scratch.mkdir(parents=True, exist_ok=True)
    specs = list(PLANS[args.plan]) if args.plan else [
        Spec(size, config, args.model, args.n_iters, args.mask, args.extra.split())
        for size in filter(None, args.sizes.split(",")) for config in filter(None, args.configs.split(","))]
    results: dict[str, dict] = json.loads(args.results.read_text()) if args.results.is_file() else {}
    for r in results.values():  # diffs are recomputed below against each case's reference
        for k in ("reference", "max_abs_diff", "mean_abs_diff", "hole_mean_abs_diff"):
            r.pop(k, None)
    cap = int(args.cap_gb * 2**30)
    # Plan order, except that a case's faithful run comes first, so the others can be compared
    # with it as soon as they finish (plans list the fallback references first in their case).
    first_seen = {s.case: i for i, s in reversed(list(enumerate(specs)))}
    specs.sort(key=lambda s: (first_seen[s.case], s.config != REFERENCES[0]))
    for spec in specs:
        for repeat in range(args.repeats):
            key = spec.key + (f"#{repeat}" if repeat else "")
            if key in results and not args.rerun and "error" not in results[key]:
                continue
            predicted = predicted_peak(spec)
            if predicted is not None and predicted > cap:
                record = skip_record(spec, predicted, cap)
            else:
                print(f"running {key} (predicted {gib(predicted)} GiB) ...", flush=True)
                record = launch(spec, args.scratch, cap, args.timeout)
                record["predicted_peak_bytes"] = predicted
                add_diffs(record, args.scratch, results)
            record["key"] = key
            results[key] = record
            args.results.write_text(json.dumps(results, indent=1))
            print(table([record]).splitlines()[-1], flush=True)
    for record in results.values():
        record["case"] = Spec(**record["spec"]).case
    for record in results.values():
        add_diffs(record, args.scratch, results)
        record["predicted_peak_bytes"] = predicted_peak(Spec(**record["spec"]))  # the current model
    args.results.write_text(json.dumps(results, indent=1))
    ordered = sorted(results.values(), key=lambda r: (r["spec"]["model"], SIZES[r["spec"]["size"]][0] *
                                                      SIZES[r["spec"]["size"]][1], r["spec"]["mask"], r["key"]))
    notes_path = REPO / "benchmarks" / "notes.md"
    notes = notes_path.read_text() if notes_path.is_file() else ""
    write_markdown(args.markdown, ordered, machine(), notes)
    print(table(ordered))


if __name__ == "__main__":
    main()
