"""Benchmark refinement: wall time per image, per scale and per iteration, peak memory, and the
output's difference to the faithful baseline, for each size x configuration.

Every run is a fresh child process (peak RSS is per process), watched by the parent, which kills
it above `--cap-gb` of resident memory; runs whose *predicted* peak (lama_refine.perf.memory) is over
the cap are not started. Results accumulate as JSON in `--results` and `docs/benchmarks.md` is
rewritten from all of them, so a plan can be run in pieces.

    python benchmarks/bench.py --plan smoke            # tiny sizes, a minute: does everything run
    python benchmarks/bench.py --plan cpu              # the CPU table of docs/benchmarks.md
    python benchmarks/bench.py --sizes 1mp --configs lean,lean+bf16 --n-iters 4
    python benchmarks/bench.py --plan anchor --lama /path/to/lama --lama-python /path/to/lama-venv/bin/python

`--lama CHECKOUT --lama-python PYTHON` adds the config `original`: advimman/lama's own
`refine_predict` (imported from the checkout at run time, never copied here) in a child started
with PYTHON, a venv with LaMa's requirements, on the same image, mask and weights as the others.

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
from dataclasses import asdict, dataclass, field, replace
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
# The system allocator. The app's default became perf.allocator=auto (tcmalloc where installed):
# the configs from before name glibc, so they (and their results) mean what they meant.
GLIBC = ["perf.allocator=glibc", "perf.malloc_trim=false"]  # glibc as it comes (malloc_trim became the default later)
# The faithful baseline is the original's code path *and* the original's allocator behaviour.
UNTILED = ["perf.tile_rows=null"]  # whole images (banding became the default after these configs were measured)
FAITHFUL = ["perf.lean_backward=false", "perf.mmap_threshold_kb=null", *GLIBC, *UNTILED]
MMAP_THRESHOLDS_KB = (256, 1024, 4096, 16384, 32768)  # the glibc study: fixed thresholds up to glibc's cap
CONFIGS: dict[str, list[str]] = {
    # advimman/lama's refine_predict (--lama): these overrides only feed the memory prediction and
    # the shared parameters (n_iters, pyramid); the faithful path on glibc is the original's
    "original": FAITHFUL,
    "faithful": FAITHFUL,
    "faithful+checkpointing": FAITHFUL + ["perf.checkpointing=true"],
    "defaults": [],  # the app's defaults as shipped (perf.allocator=auto, perf.tile_rows=32)
    "defaults+untiled": UNTILED,
    "defaults+bf16": ["perf.amp=bf16"],
    "glibc": GLIBC,
    **{f"glibc+mmap{kb}": GLIBC + [f"perf.mmap_threshold_kb={kb}"] for kb in MMAP_THRESHOLDS_KB},
    "glibc+trim": ["perf.allocator=glibc", "perf.malloc_trim=true"],  # the defaults where tcmalloc is missing
    "lean": GLIBC + UNTILED,
    "lean+mmap128": GLIBC + ["perf.mmap_threshold_kb=128"] + UNTILED,
    "lean+bf16": GLIBC + ["perf.amp=bf16"] + UNTILED,
    "lean+thp": GLIBC + UNTILED,  # THP_MEM_ALLOC_ENABLE=1: torch asks for transparent huge pages (fewer page faults)
    "lean+jemalloc": ["perf.allocator=jemalloc"] + UNTILED,  # run with LD_PRELOAD (lama_refine.perf.allocator)
    "lean+tcmalloc": ["perf.allocator=tcmalloc"] + UNTILED,
    "lean+bf16+jemalloc": ["perf.amp=bf16", "perf.allocator=jemalloc"] + UNTILED,
    "lean+bf16+tcmalloc": ["perf.amp=bf16", "perf.allocator=tcmalloc"] + UNTILED,
    "lean+tiled": GLIBC + ["perf.tile_rows=64"],
    "lean+tcmalloc+tiled": ["perf.allocator=tcmalloc", "perf.tile_rows=64"],
    "lean+tcmalloc+banded-front": ["perf.allocator=tcmalloc", "perf.tile_rows=64", "perf.tile_tail=false"],
    "lean+bf16+tcmalloc+tiled": ["perf.amp=bf16", "perf.allocator=tcmalloc", "perf.tile_rows=64"],
    "lean+channels_last": GLIBC + ["perf.channels_last=true"] + UNTILED,
    "lean+checkpointing": GLIBC + ["perf.checkpointing=true"] + UNTILED,
    "lean+compile": GLIBC + ["perf.compile=true"] + UNTILED,
    "crop": GLIBC + ["region=crop"] + UNTILED,
    "crop+bf16": GLIBC + ["region=crop", "perf.amp=bf16"] + UNTILED,
}

# The configuration whose output a run is compared with (same image, mask and model), in order of
# preference: LaMa's own code where it ran (--lama); the faithful baseline where it fits the memory
# cap; faithful+checkpointing recomputes the same ops (checked equal to faithful where both run);
# else the lean backward.
REFERENCES = ("original", "faithful", "faithful+checkpointing", "lean")


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
ANCHOR_CONFIGS = (
    "original",
    "faithful",
    "defaults",
    "defaults+untiled",
    "defaults+bf16",
    "glibc",
    *(f"glibc+mmap{kb}" for kb in MMAP_THRESHOLDS_KB),
    "glibc+trim",
)

PLANS: dict[str, list[Spec]] = {
    "smoke": [
        Spec("tiny", c, n_iters=3, extra=["pyramid.min_side=96"])
        for c in ("faithful", "lean", "lean+bf16", "lean+channels_last", "faithful+checkpointing", "crop")
    ],
    # The CPU table of docs/benchmarks.md, most important first (about an hour on a quiet 2-core machine).
    "cpu": (
        [
            Spec("0.5mp", c, n_iters=3, extra=ONE_THREAD)
            for c in ("faithful", "lean", "lean+bf16", "lean+mmap128", "lean+channels_last")
        ]
        + [Spec("1mp", c, n_iters=2, extra=ONE_THREAD) for c in ("lean", "lean+bf16")]
        + [Spec("12mp", c, n_iters=2, mask="small-hole", extra=ONE_THREAD) for c in ("lean", "crop")]
        + [Spec("1.8mp", "lean", n_iters=2, extra=ONE_THREAD)]
        + [Spec("0.5mp", "faithful+checkpointing", n_iters=3, extra=ONE_THREAD)]
        + [Spec("4k", "lean+bf16", n_iters=2, extra=ONE_THREAD + ["pyramid.px_budget=9000000"])]
    ),
    # On a quiet machine: both cores, torch's default threads.
    "quiet": [Spec("0.5mp", c, n_iters=3) for c in ("faithful", "lean", "lean+mmap128", "lean+bf16", "lean+thp")],
    # perf.allocator on a quiet machine (both cores): memory at speed parity, fp32 and bf16.
    "allocator": (
        [
            Spec("0.5mp", c, n_iters=3)
            for c in (
                "faithful",
                "lean",
                "lean+jemalloc",
                "lean+tcmalloc",
                "lean+bf16",
                "lean+bf16+jemalloc",
                "lean+bf16+tcmalloc",
            )
        ]
        + [
            Spec("1mp", c, n_iters=2)
            for c in ("lean", "lean+jemalloc", "lean+bf16+jemalloc", "lean+tcmalloc", "lean+bf16+tcmalloc")
        ]
    ),
    # perf.tile_rows: the full-resolution tail in bands (quiet machine, both cores).
    "tiled": (
        [Spec("0.5mp", c, n_iters=3) for c in ("lean+tiled", "lean+tcmalloc+tiled", "lean+tcmalloc+banded-front")]
        + [
            Spec("1mp", c, n_iters=2)
            for c in ("faithful", "lean+tcmalloc+tiled", "lean+bf16+tcmalloc+tiled", "lean+tcmalloc+banded-front")
        ]
    ),
    # region=crop against whole-photo refinement over hole sizes (12 MP photo, quiet machine).
    "crop": (
        [Spec("12mp", "lean", n_iters=2, mask=m) for m in ("small-hole", "hole-160")]
        + [Spec("12mp", "crop", n_iters=2, mask=m) for m in ("hole-160", "hole-200", "small-hole", "hole-400")]
    ),
    "compile": [Spec("0.25mp", c, n_iters=3, extra=ONE_THREAD) for c in ("lean", "lean+compile")],
    "default-model": [
        Spec("1mp", c, model="default", n_iters=3, extra=ONE_THREAD)
        for c in ("faithful+checkpointing", "lean", "lean+bf16")
    ],
    # The anchor, 1152x768: LaMa's own code (with --lama), the faithful path, the shipped defaults,
    # then the glibc study (what the system allocator gives without tcmalloc). Quiet machine.
    "anchor": [Spec("1mp", c, n_iters=6) for c in ANCHOR_CONFIGS],
    # The same at the tiny size: does everything run (a minute)
    "anchor-smoke": [Spec("tiny", c, n_iters=3, extra=["pyramid.min_side=96"]) for c in ANCHOR_CONFIGS],
}
# Plans whose cases get a table of ratios to the original (or the faithful run) in the markdown
RATIO_PLANS = ("anchor", "anchor-smoke")


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


def case_inputs(spec: Spec):
    """The image (1, 3, h, w) and mask (1, 1, h, w) of `spec`'s case."""
    import torch

    from lama_refine.train.mask_families import seeded_mask

    h, w = SIZES[spec.size]
    image = synthetic_photo(h, w, seed=0)
    if spec.mask in HOLES:
        mask = small_hole(h, w, HOLES[spec.mask])
    else:
        mask = torch.from_numpy(seeded_mask(h, w, spec.mask, seed=0))[None, None]
    return image, mask


def run_config(spec: Spec):
    """The app's config for `spec` (what the CLI would compose for it, on the CPU)."""
    from lama_refine.config import compose

    return compose(
        [
            "indir=x",
            "outdir=y",
            "progress=false",
            "devices=[cpu]",
            f"refiner.n_iters={spec.n_iters}",
            *CONFIGS[spec.config],
            *spec.extra,
        ]
    )


def run_child(spec: Spec, out_dir: Path) -> dict:
    if "thp" in spec.config:
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"  # read by torch at its first large allocation
    import numpy as np
    import torch

    from lama_refine.config import build_inpainter
    from lama_refine.parts.refine import RefineHooks
    from lama_refine.perf.switches import apply_process_settings

    image, mask = case_inputs(spec)
    generator = benchmark_generator(spec.model)
    inpainter = build_inpainter(run_config(spec), generator=generator)
    apply_process_settings(inpainter.perf)  # this script is the entry point
    device = inpainter.devices[-1]

    stamps: list[tuple[int, int, float]] = []  # (scale, iteration, time after that forward)

    def progress(scale, n_scales, it, n_iters, loss):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append((scale, it, time.perf_counter()))

    inpainter.hooks = RefineHooks(progress=progress)
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
        iterations += [b - a for a, b in zip(times, times[1:], strict=False)]  # backward + step + next forward
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
# Child: advimman/lama's own refinement (config `original`)
# ---------------------------------------------------------------------------------------------


def prepare_original(spec: Spec, out_dir: Path, lama: Path) -> dict:
    """Parent side: write the case's inputs and the weights of `benchmark_generator(spec.model)`
    to `out_dir`, and return what the original's child needs (it runs without lama_refine)."""
    import numpy as np
    import torch

    from lama_refine.models import BIG_LAMA

    if spec.model != "big-lama":
        raise ValueError("config original: only the big-lama model (LaMa's FFCResNetGenerator with big-lama's config)")
    weights = out_dir / f"{spec.model}_weights.pt"
    if str(weights) not in _WRITTEN:  # once per bench process: the weights of this code, not an older run's
        torch.save(benchmark_generator(spec.model).state_dict(), weights)
        _WRITTEN.add(str(weights))
    image, mask = case_inputs(spec)
    np.save(out_dir / f"{spec.case}_image.npy", image[0].numpy())
    np.save(out_dir / f"{spec.case}_mask.npy", mask[0, 0].numpy())
    cfg = run_config(spec)
    if not cfg.pyramid._target_.endswith(".OriginalPyramid") or not cfg.refiner._target_.endswith(".L1Refiner"):
        raise ValueError("config original: LaMa's pyramid and refiner only (pyramid=original, refiner=l1)")
    threads = cfg.perf.get("threads")
    return {
        "lama": str(lama),
        "generator": {k: v for k, v in BIG_LAMA.items() if k != "kind"},
        "weights": str(weights),
        "image": str(out_dir / f"{spec.case}_image.npy"),
        "mask": str(out_dir / f"{spec.case}_mask.npy"),
        # refine_predict's arguments, as our own runs of the spec have them
        "params": {
            "gpu_ids": "0,",
            "modulo": int(cfg.modulo),
            "n_iters": int(cfg.refiner.n_iters),
            "lr": float(cfg.refiner.lr),
            "min_side": int(cfg.pyramid.min_side),
            "max_scales": int(cfg.pyramid.max_scales),
            "px_budget": int(cfg.pyramid.px_budget),
        },
        "threads": int(threads) if threads else None,
    }


_WRITTEN: set[str] = set()


class IterationClock:
    """Stands in for the `tqdm` of LaMa's refinement module: a bar per scale whose iteration
    starts it stamps (LaMa's `_infer` loops `for idi in tqdm(range(n_iters))`)."""

    def __init__(self):
        self.scales: list[tuple[float, list[float]]] = []  # (bar made, iteration starts)

    def __call__(self, iterable, **kwargs):
        starts: list[float] = []
        self.scales.append((time.perf_counter(), starts))
        return _StampingBar(iterable, starts)


class _StampingBar:
    def __init__(self, iterable, starts: list[float]):
        self.iterable, self.starts = iterable, starts

    def __iter__(self):
        for item in self.iterable:
            self.starts.append(time.perf_counter())
            yield item

    def set_description(self, *args, **kwargs) -> None:
        pass


def run_original_child(spec: Spec, out_dir: Path, job: dict) -> dict:
    """advimman/lama's `refine_predict` with LaMa's own generator class loaded with the weights
    our runs use, the batch built as LaMa's InpaintingDataset + default_collate build it, and
    `torch.device('cuda:N')` mapped to the CPU (tools/make_lama_reference.py's import_lama). Runs
    under LaMa's venv: imports no lama_refine."""
    import importlib
    import types

    import numpy as np
    import torch
    from torch.utils.data._utils.collate import default_collate

    sys.path.insert(0, str(REPO / "tools"))
    from make_lama_reference import import_lama

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    lama = import_lama(Path(job["lama"]))
    ffc = importlib.import_module("saicinpainting.training.modules.ffc")
    data = importlib.import_module("saicinpainting.evaluation.data")
    refinement = importlib.import_module("saicinpainting.evaluation.refinement")
    clock = IterationClock()
    refinement.tqdm = clock
    rss_imports = peak_rss_bytes()

    with torch.device("meta"):  # the weights are the file's tensors: no second copy in the peak
        generator = ffc.FFCResNetGenerator(**job["generator"])
    generator.load_state_dict(torch.load(job["weights"], weights_only=True), strict=True, assign=True)
    generator.eval().requires_grad_(False)  # LaMa's predict: model.freeze()
    # what refine_predict reads of LaMa's DefaultInpaintingTrainingModule
    model = types.SimpleNamespace(training=False, add_noise_kwargs={}, concat_mask=True, generator=generator)
    modulo = job["params"]["modulo"]
    sample = {"image": np.load(job["image"]).astype(np.float32), "mask": np.load(job["mask"]).astype(np.float32)[None]}
    sample["unpad_to_size"] = sample["image"].shape[1:]  # InpaintingDataset.__getitem__ with pad_out_to_modulo
    sample["image"] = data.pad_img_to_modulo(sample["image"], modulo)
    sample["mask"] = data.pad_img_to_modulo(sample["mask"], modulo)
    batch = default_collate([sample])

    rss_before = peak_rss_bytes()
    start = time.perf_counter()
    result = lama.refine_predict(batch, model, **job["params"])
    total = time.perf_counter() - start
    np.save(out_dir / f"{spec.key}.npy", result[0].detach().numpy().astype(np.float32))

    bounds = [start, *(made for made, _ in clock.scales[1:]), start + total]
    scale_times = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    iterations = [b - a for _, starts in clock.scales for a, b in zip(starts, starts[1:], strict=False)]
    return {
        "total_s": total,
        "scale_s": scale_times,  # from one scale's bar to the next (the first from the start)
        "iteration_s": iterations,  # forward + loss + backward + step, from one iteration's start to the next
        "iteration_median_s": float(np.median(iterations)) if iterations else None,
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_run_bytes": rss_before,  # LaMa's imports (lightning, kornia, cv2) and the weights
        "rss_after_imports_bytes": rss_imports,  # torch and LaMa's modules (ours import less: compare)
        "cuda_max_allocated_bytes": None,
        "threads": torch.get_num_threads(),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "n_scales": len(scale_times),
        "working_size": list(result.shape[-2:]),
        "implementation": f"advimman/lama refine_predict ({job['lama']})",
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
    """Predicted peak RSS (bytes) of one run from the memory model (`lama_refine.perf.memory`), after the
    pixel budget; crops are estimated as the whole photo, an upper bound."""
    import torch

    from lama_refine.config import load_model
    from lama_refine.models import BIG_LAMA, build_generator
    from lama_refine.perf.allocator import resolve
    from lama_refine.perf.memory import estimate_peak

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
    perf = perf_from_overrides(overrides)
    perf = replace(perf, allocator=resolve(perf.allocator))  # the child is started with it (launch)
    return estimate_peak(generator, (h, w), perf, "cpu", input_size=SIZES[spec.size]).total


def child_env(spec: Spec, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `spec`'s child: the allocator its config resolves to (`auto`: tcmalloc
    where installed) preloaded exactly as the CLI's re-exec does, no other allocator inherited from
    this process; LaMa's own code (`original`) runs on the system allocator, as it does."""
    from lama_refine.perf.allocator import REEXEC_MARK, preload_env, resolve

    env = dict(os.environ if environ is None else environ)
    kept = [
        p
        for p in env.pop("LD_PRELOAD", "").split(":")
        if p and not any(stem in Path(p).name for stem in ("libjemalloc", "libtcmalloc"))
    ]
    if kept:
        env["LD_PRELOAD"] = ":".join(kept)
    env.pop(REEXEC_MARK, None)
    if spec.config == "original":
        return env
    env["PYTHONPATH"] = str(REPO)
    allocator = resolve(perf_from_overrides(CONFIGS[spec.config] + spec.extra).allocator)
    # the CLI re-executes itself with the library preloaded; a child is started with it (not
    # installed: the child warns and runs on the system allocator)
    preloaded = preload_env(allocator, env) if allocator is not None else None
    return {**preloaded, REEXEC_MARK: "1"} if preloaded is not None else env


def child_command(spec: Spec, out_dir: Path, lama: Path | None, lama_python: str | None) -> list[str]:
    if spec.config != "original":
        return [sys.executable, __file__, "--child", json.dumps(asdict(spec)), "--scratch", str(out_dir)]
    if lama is None or lama_python is None:
        raise ValueError("config original needs --lama CHECKOUT and --lama-python PYTHON")
    job = prepare_original(spec, out_dir, lama)
    return [
        lama_python,
        __file__,
        "--original-child",
        json.dumps(asdict(spec)),
        "--scratch",
        str(out_dir),
        "--job",
        json.dumps(job),
    ]


def launch(
    spec: Spec,
    out_dir: Path,
    cap_bytes: int,
    timeout_s: float,
    lama: Path | None = None,
    lama_python: str | None = None,
) -> dict:
    """Run `spec` in a child process; kill it above `cap_bytes` resident or after `timeout_s`."""
    record = {"spec": asdict(spec), "key": spec.key, "case": spec.case}
    try:
        cmd, env = child_command(spec, out_dir, lama, lama_python), child_env(spec)
    except ValueError as e:
        return {
            **record,
            "error": f"not run: {e}",
            "load_before": os.getloadavg(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
        }
    record["load_before"] = os.getloadavg()
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
    record.update(load_after=os.getloadavg(), date=datetime.datetime.now().isoformat(timespec="seconds"))
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
        candidates = [
            r
            for r in results.values()
            if r["case"] == record["case"]
            and "error" not in r
            and r["spec"]["config"] == ref_config
            and r["key"] != record["key"]
            and (out_dir / f"{r['key']}.npy").is_file()
        ]
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

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    flags = Path("/proc/cpuinfo").read_text()
    mem = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "memory_bytes": mem,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def gib(x: float | None) -> str:
    return "" if x is None else f"{x / 2**30:.2f}"


def fmt(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def sci(x: float | None) -> str:
    return "" if x is None else f"{x:.1e}"


def table(results: list[dict]) -> str:
    """One markdown table row per run, grouped by case."""
    lines = [
        "| model | size | mask | iters | config | total s | per scale s | s/iter (median) | peak RSS GiB "
        "| predicted GiB | vs | max abs diff | mean abs diff | hole mean abs diff | load 1-min |",
        "|" + "---|" * 15,
    ]
    for r in results:
        s = dict(r["spec"])
        s["config"] = " ".join([s["config"], *s["extra"]])
        h, w = SIZES[s["size"]]
        size = f"{s['size']} ({w}x{h})"
        if "error" in r:
            lines.append(
                f"| {s['model']} | {size} | {s['mask']} | {s['n_iters']} | {s['config']} | "
                f"{r['error']} | | | {gib(r.get('watchdog_peak_rss_bytes'))} | "
                f"{gib(r.get('predicted_peak_bytes'))} | | | | | {fmt(r['load_before'][0])} |"
            )
            continue
        lines.append(
            f"| {s['model']} | {size} | {s['mask']} | {s['n_iters']} | {s['config']} | {fmt(r['total_s'])} | "
            f"{' + '.join(fmt(t) for t in r['scale_s'])} | {fmt(r['iteration_median_s'], 2)} | "
            f"{gib(r['peak_rss_bytes'])} | {gib(r.get('predicted_peak_bytes'))} | {r.get('reference', '')} | "
            f"{sci(r.get('max_abs_diff'))} | {sci(r.get('mean_abs_diff'))} | {sci(r.get('hole_mean_abs_diff'))} | "
            f"{fmt(r['load_before'][0])} |"
        )
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else ""


def ratio_tables(results: list[dict], cases: set[str]) -> str:
    """For each of `cases` in `results`: every run's time, s / iteration and peak RSS as ratios to
    the original's (LaMa's own code, where it ran), else to the faithful run's, with the max abs
    difference to that run's output."""
    blocks, order = [], {s.config: i for plan in RATIO_PLANS for i, s in enumerate(PLANS[plan])}
    for case in sorted(cases):
        runs = sorted(
            (r for r in results if r["case"] == case),
            key=lambda r: (order.get(r["spec"]["config"], len(order)), r["key"]),
        )
        ref = next(
            (r for name in ("original", "faithful") for r in runs if r["spec"]["config"] == name and "error" not in r),
            None,
        )
        if ref is None:
            continue
        name = ref["spec"]["config"]
        lines = [
            f"{case}, vs {name}:",
            "",
            f"| config | total s | vs {name} | s/iter (median) | vs {name} | peak RSS GiB | vs {name} "
            f"| RSS before the run GiB | max abs diff vs {name} |",
            "|" + "---|" * 9,
        ]
        for r in runs:
            config = " ".join([r["spec"]["config"], *r["spec"]["extra"]])
            if "error" in r:
                lines.append(f"| {config} | {r['error']} | | | | | | | |")
                continue
            diff = "-" if r is ref else sci(r.get("max_abs_diff")) if r.get("reference") == name else ""
            lines.append(
                f"| {config} | {fmt(r['total_s'])} | {ratio(r['total_s'], ref['total_s'])} | "
                f"{fmt(r['iteration_median_s'], 2)} | {ratio(r['iteration_median_s'], ref['iteration_median_s'])} | "
                f"{gib(r['peak_rss_bytes'])} | {ratio(r['peak_rss_bytes'], ref['peak_rss_bytes'])} | "
                f"{gib(r.get('rss_before_run_bytes'))} | {diff} |"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_markdown(path: Path, results: list[dict], info: dict, notes: str) -> None:
    header = (
        f"# Benchmarks\n\nGenerated by `benchmarks/bench.py` (rerun it to refresh; the prose around the "
        f"tables lives in `benchmarks/notes.md`).\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores (AVX-512 bf16: {info['avx512_bf16']}), "
        f"{info['memory_bytes'] / 2**30:.0f} GiB; torch {info['torch']}, Python {info['python']}; "
        f"CUDA: {info['cuda'] or 'none'}. Last run: {max(r['date'] for r in results)}.\n\n"
    )
    ratios = ratio_tables(results, {s.case for plan in RATIO_PLANS for s in PLANS[plan]})
    ratios = f"\n\n## Ratios to the original (`--plan anchor`)\n\n{ratios}" if ratios else ""
    path.write_text(header + notes + ratios + "\n\n## All runs\n\n" + table(results) + "\n")


def skip_record(spec: Spec, predicted: float, cap: int) -> dict:
    return {
        "spec": asdict(spec),
        "key": spec.key,
        "case": spec.case,
        "error": f"not run: predicted {predicted / 2**30:.1f} GiB > {cap / 2**30:.1f} GiB cap",
        "predicted_peak_bytes": predicted,
        "load_before": os.getloadavg(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


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
    parser.add_argument("--lama", type=Path, help="a checkout of advimman/lama: adds the config `original`")
    parser.add_argument("--lama-python", help="python of a venv with LaMa's requirements, for `original`")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--original-child", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = Spec(**json.loads(args.child))
        print(json.dumps(run_child(spec, args.scratch)))
        return
    if args.original_child:
        spec = Spec(**json.loads(args.original_child))
        print(json.dumps(run_original_child(spec, args.scratch, json.loads(args.job))))
        return
    if (args.lama is None) != (args.lama_python is None):
        parser.error("--lama and --lama-python go together")
    if args.lama is not None and not (args.lama / "saicinpainting").is_dir():
        parser.error(f"--lama {args.lama}: no saicinpainting/ folder there; expected an advimman/lama checkout")

    args.scratch.mkdir(parents=True, exist_ok=True)
    specs = (
        list(PLANS[args.plan])
        if args.plan
        else [
            Spec(size, config, args.model, args.n_iters, args.mask, args.extra.split())
            for size in filter(None, args.sizes.split(","))
            for config in filter(None, args.configs.split(","))
        ]
    )
    if args.lama is None and any(s.config == "original" for s in specs):
        print("config original left out: it needs --lama CHECKOUT --lama-python PYTHON", flush=True)
        specs = [s for s in specs if s.config != "original"]
    results: dict[str, dict] = json.loads(args.results.read_text()) if args.results.is_file() else {}
    for r in results.values():  # diffs are recomputed below against each case's reference
        for k in ("reference", "max_abs_diff", "mean_abs_diff", "hole_mean_abs_diff"):
            r.pop(k, None)
    cap = int(args.cap_gb * 2**30)
    # Plan order, except that a case's original and faithful runs come first, so the others can be
    # compared with them as soon as they finish (plans list the fallback references first in their case).
    first_seen = {s.case: i for i, s in reversed(list(enumerate(specs)))}
    first = {"original": 0, "faithful": 1}
    specs.sort(key=lambda s: (first_seen[s.case], first.get(s.config, 2)))
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
                record = launch(spec, args.scratch, cap, args.timeout, args.lama, args.lama_python)
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
    ordered = sorted(
        results.values(),
        key=lambda r: (
            r["spec"]["model"],
            SIZES[r["spec"]["size"]][0] * SIZES[r["spec"]["size"]][1],
            r["spec"]["mask"],
            r["key"],
        ),
    )
    notes_path = REPO / "benchmarks" / "notes.md"
    notes = notes_path.read_text() if notes_path.is_file() else ""
    write_markdown(args.markdown, ordered, machine(), notes)
    print(table(ordered))


if __name__ == "__main__":
    main()
