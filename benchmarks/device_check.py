"""One-shot GPU check: correctness, speed and memory of the CUDA paths, in one call of ~8 minutes.

    python benchmarks/device_check.py                       # on a GPU: docs/benchmarks-cuda.{md,json}
    python benchmarks/device_check.py --dry-run --out DIR   # CPU, toy sizes, a minute: it cannot rot

Sections, each in its own try block with its own time cap (an error or a cap is recorded in the
JSON and the next section runs):
1. correctness: each golden case (tests/fixtures/golden) within 1e-4 of the original's output;
   the lean backward's input gradients against autograd's on a small big-lama-shaped rear;
   a two-stage split on one device (`devices=[cuda:0,cuda:0]`) against one stage.
2. speed at 1.8 MP, big-lama-shaped weights: s/iteration of faithful, lean (default), bf16 and
   bf16 + `perf.compile`, with the max abs diff of each output to faithful.
3. memory (`torch.cuda.max_memory_allocated`) at 1.8 MP and 4K (3840x2160) with
   `pyramid=full_resolution`: faithful, lean, lean + bf16.
4. `pyramid.px_budget=auto` on this card.
5. a real out-of-memory retry: `torch.cuda.set_per_process_memory_fraction` between the measured
   peaks of the full and the halved pixel budget, so the first attempt fails and the retry fits.
With `--dry-run` everything runs on the CPU at toy sizes with the built-in model (compile is
skipped, the out-of-memory error is raised by a hook and marked simulated, memory is not
measured), to keep the script working between GPU loans.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench import benchmark_generator, synthetic_photo  # noqa: E402

from lama_refine.batch.runner import inpaint_with_retries  # noqa: E402
from lama_refine.config import build_inpainter, compose  # noqa: E402
from lama_refine.io import Inputs, read_image, read_mask  # noqa: E402
from lama_refine.parts.refine import RefineHooks  # noqa: E402
from lama_refine.perf.switches import apply_process_settings  # noqa: E402

GOLDEN = REPO / "tests" / "fixtures" / "golden"
GOLDEN_TOL = 1e-4

# Real runs; --dry-run shrinks sizes and iterations (CPU, built-in model).
FULL = {
    "speed_size": (1125, 1600),
    "speed_iters": 4,
    "memory_sizes": {"1.8mp": (1125, 1600), "4k": (2160, 3840)},
    "memory_iters": 2,
    "oom_size": (1125, 1600),
    "model": "big-lama",
    "min_side": 512,
    "caps": {"correctness": 60, "speed": 200, "memory": 120, "px_budget_auto": 20, "oom_retry": 60},
}
DRY = {
    "speed_size": (96, 128),
    "speed_iters": 3,
    "memory_sizes": {"tiny": (96, 128), "small": (128, 192)},
    "memory_iters": 2,
    "oom_size": (96, 128),
    "model": "default",
    "min_side": 48,
    "caps": {"correctness": 120, "speed": 60, "memory": 60, "px_budget_auto": 30, "oom_retry": 60},
}
SPEED_CONFIGS = {
    "faithful": ["perf.lean_backward=false"],
    "lean (default)": [],
    "bf16": ["perf.amp=bf16"],
    "bf16+compile": ["perf.amp=bf16", "perf.compile=true"],
}
MEMORY_CONFIGS = {"faithful": ["perf.lean_backward=false"], "lean": [], "lean+bf16": ["perf.amp=bf16"]}


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def time_cap(seconds: int):
    """Raise SectionTimeout in the main thread after `seconds` (between Python bytecodes, so a
    long CUDA kernel finishes first)."""

    def handler(signum, frame):
        raise SectionTimeout(f"over its {seconds} s cap")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class Check:
    """What every section shares: the device, sizes, the big-lama-shaped generator (built once)."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.sizes = DRY if dry_run else FULL
        self.device = torch.device("cpu" if dry_run else "cuda:0")
        self._generator = None

    @property
    def generator(self):
        if self._generator is None:
            self._generator = benchmark_generator(self.sizes["model"])
        return self._generator

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None

    def inpainter(self, overrides: list[str], generator=None):
        devices = f"devices=[{self.device}]"
        cfg = compose(
            ["indir=x", "outdir=y", "progress=false", devices, f"pyramid.min_side={self.sizes['min_side']}", *overrides]
        )
        inpainter = build_inpainter(cfg, generator=generator if generator is not None else self.generator)
        apply_process_settings(inpainter.perf)  # this script is the entry point
        return inpainter

    def timed(self, inpainter, image, mask) -> dict[str, Any]:
        """One run: output, wall time, median s/iteration at the finest scale, peak memory."""
        stamps: list[tuple[int, float]] = []

        def progress(scale, n_scales, it, n_iters, loss):
            self.sync()
            stamps.append((scale, time.perf_counter()))

        inpainter.hooks = RefineHooks(progress=progress)
        self.reset_memory()
        start = time.perf_counter()
        result = inpainter.run(image, mask)
        self.sync()
        total = time.perf_counter() - start
        finest = max(s for s, _ in stamps)
        times = [t for s, t in stamps if s == finest]
        steps = [b - a for a, b in zip(times, times[1:], strict=False)]
        return {
            "image": result.image,
            "total_s": total,
            "s_per_iter": statistics.median(steps) if steps else None,
            "peak_bytes": self.peak(),
            "scales": [list(s.shape[-2:]) for s in result.scales],
        }

    def photo(self, size: tuple[int, int]):
        from lama_refine.train.mask_families import seeded_mask

        image = synthetic_photo(*size, seed=0)
        mask = torch.from_numpy(seeded_mask(*size, "medium", seed=0))[None, None]
        return image, mask


# --- 1. correctness ------------------------------------------------------------------------------


def golden_overrides(case: Path, device: torch.device) -> list[str]:
    p = json.loads((case / "params.json").read_text())
    n_devices = len([t for t in p["gpu_ids"].replace(" ", "").split(",") if t.isdigit()])
    return [
        f"model.path={case / 'generator.safetensors'}",
        f"refiner.n_iters={p['n_iters']}",
        f"refiner.lr={p['lr']}",
        f"modulo={p['modulo']}",
        f"pyramid.min_side={p['min_side']}",
        f"pyramid.max_scales={p['max_scales']}",
        f"pyramid.px_budget={p['px_budget']}",
        "output.match_input_size=false",
        "progress=false",
        "indir=x",
        "outdir=y",
        "devices=[" + ",".join([str(device)] * n_devices) + "]",
    ]


def randomised_small_ffc(device: torch.device, dtype: torch.dtype):
    from lama_refine.models import BIG_LAMA, build_generator

    torch.manual_seed(0)
    generator = build_generator({**BIG_LAMA, "ngf": 8, "n_blocks": 2})
    gen = torch.Generator().manual_seed(0)
    for m in generator.modules():  # non-trivial BatchNorm statistics, so their scales matter in backward
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
    return generator.eval().requires_grad_(False).to(device, dtype)


def lean_gradients(device: torch.device) -> dict[str, Any]:
    from lama_refine.parts.partition import EvenPartitioner
    from lama_refine.perf.lean import lean_rear

    out: dict[str, Any] = {}
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        generator = randomised_small_ffc(device, dtype)
        partition = EvenPartitioner().split(generator, [device])
        x = torch.rand(1, 4, 64, 80, dtype=dtype, generator=torch.Generator().manual_seed(1)).to(device)
        with torch.no_grad():
            features = partition.front(x)
        rear = partition.rear[0].module
        lean = lean_rear(rear)
        a = [f.detach().clone().requires_grad_(True) for f in features]
        b = [f.detach().clone().requires_grad_(True) for f in features]
        y, y_lean = rear(tuple(a)), lean(tuple(b))
        grad_out = torch.randn(y.shape, dtype=dtype, generator=torch.Generator().manual_seed(2)).to(device)
        rel = max(
            float((g - e).abs().max() / e.abs().max())
            for e, g in zip(torch.autograd.grad(y, a, grad_out), torch.autograd.grad(y_lean, b, grad_out), strict=True)
        )
        out[str(dtype).replace("torch.", "")] = {
            "forward_max_abs_diff": float((y - y_lean).detach().abs().max()),
            "grad_max_rel_diff": rel,
            "tol": tol,
            "ok": rel <= tol,
        }
    return out


def correctness(check: Check, result: dict[str, Any]) -> None:
    result.update({"golden": {}, "tol": GOLDEN_TOL})
    for case in sorted(p for p in GOLDEN.iterdir() if p.is_dir()):
        inpainter = build_inpainter(compose(golden_overrides(case, check.device)))
        out = inpainter.run(read_image(case / "image.png"), read_mask(case / "mask.png")).image
        expected = torch.from_numpy(np.load(case / "refined.npy")).permute(2, 0, 1)[None]
        diff = float((out - expected).abs().max())
        result["golden"][case.name] = {"max_abs_diff": diff, "ok": diff <= GOLDEN_TOL}
    result["lean_gradients"] = lean_gradients(check.device)
    case = GOLDEN / "three_scales"
    image, mask = read_image(case / "image.png"), read_mask(case / "mask.png")
    outs = {}
    for name, devices in (("one stage", [check.device]), ("two stages", [check.device, check.device])):
        overrides = [o for o in golden_overrides(case, check.device) if not o.startswith("devices=")]
        overrides.append("devices=[" + ",".join(map(str, devices)) + "]")
        outs[name] = build_inpainter(compose(overrides)).run(image, mask).image
    diff = float((outs["one stage"] - outs["two stages"]).abs().max())
    result["two_stage_split"] = {
        "devices": f"[{check.device},{check.device}]",
        "max_abs_diff_vs_one_stage": diff,
        "ok": diff <= 1e-6,
    }


# --- 2. speed ------------------------------------------------------------------------------------


def speed(check: Check, out: dict[str, Any]) -> None:
    size = check.sizes["speed_size"]
    image, mask = check.photo(size)
    rows: dict[str, Any] = {}
    out.update(
        {
            "size": f"{size[1]}x{size[0]}",
            "model": check.sizes["model"],
            "n_iters": check.sizes["speed_iters"],
            "configs": rows,
        }
    )  # filled as it goes: a time cap keeps the rows done
    faithful = None
    for name, overrides in SPEED_CONFIGS.items():
        if check.dry_run and "perf.compile=true" in overrides:
            rows[name] = {"skipped": "dry run (torch.compile on CPU needs minutes)"}
            continue
        try:
            inpainter = check.inpainter([f"refiner.n_iters={check.sizes['speed_iters']}", *overrides])
            r = check.timed(inpainter, image, mask)
        except SectionTimeout:
            raise
        except Exception as e:  # noqa: BLE001 - one configuration's failure is its row
            rows[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            continue
        if faithful is None and name == "faithful":
            faithful = r["image"]
        rows[name] = {k: r[k] for k in ("total_s", "s_per_iter", "peak_bytes", "scales")}
        if faithful is not None:
            rows[name]["max_abs_diff_vs_faithful"] = float((r["image"] - faithful).abs().max())
        del inpainter, r


# --- 3. memory -----------------------------------------------------------------------------------


def memory(check: Check, out: dict[str, Any]) -> None:
    rows: dict[str, Any] = {}
    out.update({"n_iters": check.sizes["memory_iters"], "runs": rows})
    for label, size in check.sizes["memory_sizes"].items():
        image, mask = check.photo(size)
        for name, overrides in MEMORY_CONFIGS.items():
            key = f"{label} {name}"
            try:
                inpainter = check.inpainter(
                    [f"refiner.n_iters={check.sizes['memory_iters']}", "pyramid=full_resolution", *overrides]
                )
                r = check.timed(inpainter, image, mask)
                rows[key] = {
                    "size": f"{size[1]}x{size[0]}",
                    "config": name,
                    "peak_bytes": r["peak_bytes"],
                    "total_s": r["total_s"],
                    "scales": r["scales"],
                }
            except SectionTimeout:
                raise
            except Exception as e:  # noqa: BLE001 - e.g. faithful out of memory at 4K: that is a result
                rows[key] = {"size": f"{size[1]}x{size[0]}", "config": name, "error": f"{type(e).__name__}: {e}"[:300]}
            inpainter = r = None
            check.reset_memory()


# --- 4. px_budget=auto ---------------------------------------------------------------------------


def px_budget_auto(check: Check, out: dict[str, Any]) -> None:
    from lama_refine.perf.memory import available_memory

    check.reset_memory()
    inpainter = check.inpainter(["pyramid.px_budget=auto"])
    out.update({"available_bytes": available_memory(check.device), "px_budget": int(inpainter.pyramid.px_budget)})


# --- 5. a real out-of-memory retry ---------------------------------------------------------------


def oom_retry(check: Check, out: dict[str, Any]) -> None:
    size = check.sizes["oom_size"]
    image, mask = check.photo(size)
    budget = size[0] * size[1]
    overrides = ["refiner.n_iters=2", f"pyramid.px_budget={budget}"]
    peaks = {}
    for name, b in (("full", budget), ("halved", budget // 2)):
        r = check.timed(check.inpainter(["refiner.n_iters=2", f"pyramid.px_budget={b}"]), image, mask)
        peaks[name] = r["peak_bytes"]
    inpainter = check.inpainter(overrides)
    out.update({"px_budget": budget, "peak_bytes": peaks})
    if check.device.type == "cuda":
        total = torch.cuda.get_device_properties(check.device).total_memory
        # Between the two peaks: the first attempt cannot fit, the halved one can.
        fraction = math.sqrt(peaks["full"] * peaks["halved"]) / total
        out["memory_fraction"] = fraction
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(fraction, check.device)
        hook = contextlib.nullcontext()
    else:
        out["simulated"] = True  # the CPU dry run: the first attempt raises OutOfMemoryError itself
        hook = first_attempt_out_of_memory(inpainter)
    try:
        with hook:
            refinement, attempts = inpaint_with_retries(inpainter, Inputs(image, mask, 8), Path("oom-check"))
        out.update(
            {
                "attempts": attempts.count,
                "retries": attempts.changes,
                "errors": attempts.errors,
                "output_size": list(refinement.image.shape[-2:]),
                "ok": attempts.count == 2,
            }
        )
    finally:
        if check.device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, check.device)
            torch.cuda.empty_cache()


@contextlib.contextmanager
def first_attempt_out_of_memory(inpainter):
    calls = {"n": 0}
    hooks = inpainter.hooks

    def progress(*args):
        if calls["n"] == 0:
            calls["n"] += 1
            raise torch.OutOfMemoryError("simulated out of memory (dry run)")
        hooks.report(*args)

    inpainter.hooks = dataclasses.replace(hooks, progress=progress)
    try:
        yield
    finally:
        inpainter.hooks = hooks


# Each section fills the dict it is given as it goes, so an error or a time cap keeps what was done.
SECTIONS: dict[str, Callable[[Check, dict[str, Any]], None]] = {
    "correctness": correctness,
    "speed": speed,
    "memory": memory,
    "px_budget_auto": px_budget_auto,
    "oom_retry": oom_retry,
}


# --- report --------------------------------------------------------------------------------------


def machine(check: Check) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "dry_run": check.dry_run,
    }
    if check.device.type == "cuda":
        props = torch.cuda.get_device_properties(check.device)
        info.update(
            {
                "card": props.name,
                "memory_bytes": props.total_memory,
                "capability": f"{props.major}.{props.minor}",
                "cudnn": torch.backends.cudnn.version(),
                # TF32 convolutions (cuDNN's default) round inputs to 10 mantissa bits: a likely
                # cause should the golden cases miss 1e-4.
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            }
        )
        try:
            info["driver"] = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
                .stdout.strip()
                .splitlines()[0]
            )
        except Exception as e:  # noqa: BLE001
            info["driver"] = f"unknown ({type(e).__name__})"
    else:
        info.update({"card": f"none (CPU: {platform.processor() or platform.machine()})", "driver": None})
    return info


def gib(n) -> str:
    return "" if n is None else f"{n / 2**30:.2f}"


def num(x, digits=3) -> str:
    return "" if x is None else (f"{x:.1e}" if abs(x) < 10**-digits and x else f"{x:.{digits}f}")


def render_correctness(c: dict[str, Any]) -> list[str]:
    lines = ["## Correctness", "", "| check | value | ok |", "|---|---|---|"]
    lines += [
        f"| golden `{k}`: max abs diff to the original's output (tol {c['tol']:g}) | "
        f"{num(v['max_abs_diff'])} | {v['ok']} |"
        for k, v in c.get("golden", {}).items()
    ]
    lines += [
        f"| lean backward, {k}: max relative diff of input gradients to autograd (tol {v['tol']:g}) | "
        f"{num(v['grad_max_rel_diff'])} | {v['ok']} |"
        for k, v in c.get("lean_gradients", {}).items()
    ]
    if "two_stage_split" in c:
        t = c["two_stage_split"]
        lines.append(
            f"| two stages on one device `devices={t['devices']}` vs one stage: max abs diff | "
            f"{num(t['max_abs_diff_vs_one_stage'])} | {t['ok']} |"
        )
    return lines


def render_speed(sp: dict[str, Any]) -> list[str]:
    model = "big-lama-shaped weights" if sp["model"] == "big-lama" else "the built-in model"
    lines = [
        f"## Speed ({sp['size']}, {model}, {sp['n_iters']} iterations)",
        "",
        "| config | s / iteration (finest scale, median) | total s | peak GiB | max abs diff vs faithful |",
        "|---|---|---|---|---|",
    ]
    for k, v in sp["configs"].items():
        if "total_s" in v:
            lines.append(
                f"| {k} | {num(v['s_per_iter'])} | {num(v['total_s'], 1)} | {gib(v['peak_bytes'])} | "
                f"{num(v.get('max_abs_diff_vs_faithful'))} |"
            )
        else:
            lines.append(f"| {k} | {v.get('error') or v.get('skipped')} | | | |")
    return lines


def render_memory(me: dict[str, Any]) -> list[str]:
    lines = [
        f"## Memory (`torch.cuda.max_memory_allocated`, `pyramid=full_resolution`, {me['n_iters']} iterations)",
        "",
        "| size | config | peak GiB | total s |",
        "|---|---|---|---|",
    ]
    for v in me["runs"].values():
        peak = gib(v.get("peak_bytes")) or v.get("error", "n/a on CPU")
        lines.append(f"| {v['size']} | {v['config']} | {peak} | {num(v.get('total_s'), 1)} |")
    return lines


def render_px_budget(pa: dict[str, Any]) -> list[str]:
    return [
        "## `pyramid.px_budget=auto`",
        "",
        f"Free memory {gib(pa['available_bytes'])} GiB -> budget {pa['px_budget']:,} pixels.",
    ]


def render_oom(oo: dict[str, Any]) -> list[str]:
    how = (
        "raised by a hook (dry run)"
        if oo.get("simulated")
        else f"`set_per_process_memory_fraction({oo['memory_fraction']:.4f})`, between the measured peaks "
        f"{gib(oo['peak_bytes']['full'])} and {gib(oo['peak_bytes']['halved'])} GiB"
    )
    return [
        "## Out-of-memory retry",
        "",
        f"px_budget {oo['px_budget']:,}, first attempt out of memory {how}: {oo['attempts']} attempts, "
        f"retries {oo['retries']}, errors {[e[:80] for e in oo['errors']]}; ok: {oo['ok']}.",
    ]


RENDER = {
    "correctness": render_correctness,
    "speed": render_speed,
    "memory": render_memory,
    "px_budget_auto": render_px_budget,
    "oom_retry": render_oom,
}


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# CUDA check" + (" (dry run on CPU, toy sizes)" if m["dry_run"] else ""),
        "",
        f"Generated by `python benchmarks/device_check.py{' --dry-run' if m['dry_run'] else ''}` on {m['date']}: "
        f"{m['card']}, driver {m.get('driver')}, torch {m['torch']} (CUDA {m['cuda']}), Python {m['python']}. "
        f"Whole run {report['seconds']:.0f} s. Raw numbers: the JSON beside this file.",
        "",
    ]
    for name, sec in report["sections"].items():
        if "error" in sec:
            lines += [f"**{name}: not completed** ({sec['seconds']:.0f} s): `{sec['error']}`", ""]
    for name, sec in report["sections"].items():
        if not sec.get("result"):
            continue
        try:
            lines += RENDER[name](sec["result"]) + [""]
        except Exception as e:  # noqa: BLE001 - a partial section: its numbers are in the JSON
            lines += [f"## {name}", "", f"(partial; see the JSON: {type(e).__name__}: {e})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, the built-in model")
    parser.add_argument(
        "--out", type=Path, help="folder for benchmarks-cuda.md/.json (default: docs/; dry run: a temp dir)"
    )
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {list(SECTIONS)}")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device visible: run on a GPU machine, or use --dry-run", file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="device-check-")) if args.dry_run else REPO / "docs")
    out.mkdir(parents=True, exist_ok=True)
    check = Check(args.dry_run)
    if args.dry_run:
        torch.set_num_threads(1)
    started = time.perf_counter()
    report: dict[str, Any] = {"machine": machine(check), "sections": {}}
    for name in [s for s in args.sections.split(",") if s]:
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"result": {}}
        try:
            with time_cap(check.sizes["caps"][name]):
                SECTIONS[name](check, entry["result"])
        except Exception as e:  # noqa: BLE001 - record it, go on with the next section
            entry["error"] = f"{type(e).__name__}: {e}"[:1000]
            entry["traceback"] = traceback.format_exc()[-3000:]
        entry["seconds"] = time.perf_counter() - t0
        report["sections"][name] = entry
        print(
            f"{name}: {'error: ' + entry['error'] if 'error' in entry else 'done'} ({entry['seconds']:.0f} s)",
            flush=True,
        )
        if check.device.type == "cuda":
            torch.cuda.empty_cache()
    for name in SECTIONS:
        report["sections"].setdefault(name, {"error": "not run (--sections)", "seconds": 0.0})
    report["failed_checks"] = failed_checks(report["sections"])
    report["seconds"] = time.perf_counter() - started
    (out / "benchmarks-cuda.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "benchmarks-cuda.md").write_text(render(report) + "\n")
    print(f"wrote {out / 'benchmarks-cuda.md'} and {out / 'benchmarks-cuda.json'}")
    errors = [n for n, e in report["sections"].items() if "error" in e and e["error"] != "not run (--sections)"]
    failed = report["failed_checks"]
    for what in errors + failed:
        print(f"FAILED: {what}", file=sys.stderr)
    return 1 if errors or failed else 0


def failed_checks(tree: Any, path: str = "") -> list[str]:
    """The paths of every `"ok": false` in the report."""
    if not isinstance(tree, dict):
        return []
    here = [path] if tree.get("ok") is False else []
    return here + [p for k, v in tree.items() for p in failed_checks(v, f"{path}/{k}")]


if __name__ == "__main__":
    sys.exit(main())
