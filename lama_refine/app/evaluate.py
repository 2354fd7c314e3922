"""`lama-refine-eval`: inpaint ground-truth images with known masks and measure the result.

A Hydra app on `conf/evaluate.yaml`, which pulls in the main app's config, so every part group
and knob is an override here too. For each image of `gt_dir` it takes a mask (from `mask_dir`; else
the `photo_mask*.png` files beside the photos, LaMa's layout, when gt_dir holds any; else drawn
from one of LaMa's evaluation families, seeded per image), runs the configured pipeline
(`build_inpainter`) and records PSNR, SSIM and LPIPS (where its weights are downloaded,
`lama_refine.metrics.lpips`) over the image, the mean L1 error inside the hole, the time and the peak
memory, each image in its LaMa mask-area bin (`lama_refine.metrics.stats`). It writes `metrics.csv`,
`metrics.md`, `bins.csv`, `summary.json` and side-by-side PNGs (input with hole | plain | refined |
ground truth) for the first `visuals` images. Each image's result is appended to `per_image.jsonl`
as it is made; a rerun of the same command reuses those whose photo, mask, model and settings are
unchanged (`eval_records`), so a killed evaluation resumes. With `--multirun`, each setting writes
to `<sweep dir>/<setting>/` and `SweepComparison` (a Hydra callback) writes `comparison.csv`,
`comparison.md`, `comparison_bins.csv` and `comparison.png` to the sweep dir,
`outdir/sweeps/<time>/`: the means and each setting's paired difference from the baseline.
With `report` (the default), a run and a sweep end in `report.html` (`lama_refine.app.report`).
Nothing is written outside `outdir`, except with `trace=DIR`: the first `visuals` images'
refinements, scale by scale, under DIR (`lama_refine.app.trace`).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from kornia.metrics import psnr, ssim
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw
from torch import Tensor
from tqdm import tqdm

# cli registers the `lama_refine_groups` resolver that --help's text (conf/config.yaml) interpolates
from lama_refine.app.cli import groups_help, wants_traceback  # noqa: F401
from lama_refine.app.report import PICTURES, has_pictures, save_pictures, write_report
from lama_refine.app.trace import TRACE_JSON, Tracer, safe_name
from lama_refine.app.usage import EVAL_USAGE, check_eval_command_line, quote_value
from lama_refine.batch.eval_records import PER_IMAGE, ImageRecords, earlier_sweeps, settings_hash
from lama_refine.batch.provenance import config_model_digest
from lama_refine.batch.sweep import in_sweep, sweep_job_dir
from lama_refine.config import build_inpainter, conf_dir, read_config, resolve_devices
from lama_refine.errors import UserError
from lama_refine.io import (
    IMAGE_SUFFIXES,
    find_jobs,
    read_image,
    read_mask,
    to_hwc,
    to_uint8,
    write_atomic,
    write_result,
)
from lama_refine.metrics.lpips import load_or_none as load_lpips_or_none
from lama_refine.metrics.stats import area_bin, bin_names, paired
from lama_refine.perf.switches import apply_process_settings, release_memory
from lama_refine.pipeline import Inpainter

log = logging.getLogger("lama_refine.app.evaluate")

METRICS = ("psnr", "ssim", "hole_l1", "time_s", "peak_mem_mb")
# LPIPS is measured only where its weights are downloaded (lama_refine.metrics.lpips), so a run's metrics
# are METRICS or these; tables and comparisons take whichever its rows have.
ALL_METRICS = ("psnr", "ssim", "lpips", "hole_l1", "time_s", "peak_mem_mb")
METRIC_TITLES = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "hole_l1": "hole L1",
    "time_s": "time (s)",
    "peak_mem_mb": "peak memory (MB)",
}
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "hole_l1": False, "time_s": False, "peak_mem_mb": False}


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One evaluation pair: a ground-truth image and its mask (a file, or a generated one)."""

    name: str  # the image's path relative to gt_dir, without suffix (plus the mask's suffix if several)
    image: Path
    mask: Path | None  # None: generated from (family, seed)
    seed: int | None = None


def find_images(gt_dir: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """Image files under `gt_dir` (recursive, sorted), skipping LaMa-style `*mask*` files and
    the trees in `exclude` (an outdir inside gt_dir)."""
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"gt_dir {gt_dir} does not exist or is not a folder")
    excluded = [p.resolve() for p in exclude]
    return sorted(
        p
        for p in gt_dir.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and "mask" not in p.name
        and not any(p.resolve().is_relative_to(e) for e in excluded)
    )


def masks_beside(gt_dir: Path, exclude: Sequence[Path] = ()) -> dict[Path, list[Path]]:
    """LaMa's layout inside gt_dir itself (`photo.jpg` with `photo_mask*.png` beside it), found by
    the main app's job finder: image -> its masks. A mask without its image is an error."""
    beside: dict[Path, list[Path]] = {}
    for job in find_jobs(gt_dir, exclude=exclude):
        if job.problem is not None:
            raise FileNotFoundError(job.problem)
        assert job.mask is not None  # LaMa's layout pairs every job with a mask file
        beside.setdefault(job.image, []).append(job.mask)
    return beside


def masks_for(image: Path, gt_dir: Path, mask_dir: Path) -> list[Path]:
    """The masks of `gt_dir/sub/photo.jpg` in `mask_dir`: `sub/photo_mask*.png` (LaMa's naming, all
    of them), else `sub/photo.<any image suffix>`."""
    folder = mask_dir / image.relative_to(gt_dir).parent
    lama = sorted(folder.glob(f"{image.stem}_mask*.png"))
    if lama:
        return lama
    same = [folder / (image.stem + s) for s in IMAGE_SUFFIXES if (folder / (image.stem + s)).is_file()]
    if not same:
        raise FileNotFoundError(
            f"no mask for {image} in {folder} (expected {image.stem}_mask*.png or {image.stem}.png)"
        )
    return same[:1]


def mask_seed(base_seed: int, name: str) -> int:
    """A generated mask's seed: fixed by the image's relative path, so adding images to the folder
    does not change the masks of the others."""
    return zlib.crc32(f"{base_seed}:{name}".encode())


def find_samples(
    gt_dir: Path, mask_dir: Path | None, seed: int, max_images: int | None = None, exclude: Sequence[Path] = ()
) -> list[Sample]:
    """The pairs to evaluate. Masks come from `mask_dir`; without it, from beside the photos
    when gt_dir holds any (then only photos with masks are evaluated); else they are generated."""
    images = find_images(gt_dir, exclude)
    beside = masks_beside(gt_dir, exclude) if mask_dir is None else {}
    if beside:
        left_out = [p for p in images if p not in beside]
        if left_out:
            log.warning(
                "%d image(s) of %s have no mask beside them and are not evaluated (e.g. %s)",
                len(left_out),
                gt_dir,
                left_out[0],
            )
        images = sorted(beside)
    samples = []
    for image in images[:max_images]:
        name = image.relative_to(gt_dir).with_suffix("").as_posix()
        if mask_dir is None and not beside:
            samples.append(Sample(name, image, None, mask_seed(seed, name)))
            continue
        if beside:
            masks = beside[image]
        else:
            assert mask_dir is not None  # neither a mask_dir nor masks beside: generated above
            masks = masks_for(image, gt_dir, mask_dir)
        for mask in masks:
            suffix = mask.stem[len(image.stem) :] if len(masks) > 1 else ""
            samples.append(Sample(name + suffix, image, mask))
    return samples


def load_sample(sample: Sample, family: str) -> tuple[Tensor, Tensor]:
    """-> image (1, 3, H, W) in [0, 1], mask (1, 1, H, W) in {0, 1}."""
    from lama_refine.train.mask_families import seeded_mask

    image = read_image(sample.image)
    if sample.mask is None:
        assert sample.seed is not None  # a sample without a mask file has its seed
        h, w = image.shape[-2:]
        mask = torch.from_numpy(seeded_mask(h, w, family, sample.seed))[None, None].float()
    else:
        mask = read_mask(sample.mask)
        if mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"{sample.mask} is {tuple(mask.shape[-2:])} but {sample.image} is {tuple(image.shape[-2:])}"
            )
    return image, mask


# --- measuring ----------------------------------------------------------------------------------


def image_metrics(result: Tensor, truth: Tensor, mask: Tensor) -> dict[str, float]:
    """result, truth (1, 3, H, W) in [0, 1], mask (1, 1, H, W) -> PSNR and SSIM (kornia, 11x11
    Gaussian window) over the whole image, and the mean absolute error over hole pixels."""
    if result.shape[-2:] != truth.shape[-2:]:  # the pipeline returned the budget-shrunk size
        truth = F.interpolate(truth, size=result.shape[-2:], mode="bilinear", align_corners=False)
        mask = (F.interpolate(mask, size=result.shape[-2:], mode="bilinear", align_corners=False) > 0).float()
    result, truth = result.double().clamp(0, 1), truth.double()
    hole = mask.expand_as(result) > 0
    return {
        "psnr": float(psnr(result, truth, max_val=1.0)),
        "ssim": float(ssim(result, truth, window_size=11).mean()),
        "hole_l1": float((result - truth).abs()[hole].mean()) if hole.any() else 0.0,
    }


def rss_bytes() -> int:
    """This process's resident set size now."""
    try:
        import psutil
    except ImportError:  # Linux without psutil
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


class PeakMemory:
    """Peak memory above what was held when the block started, in MB.

    CUDA: `torch.cuda.max_memory_allocated` minus the allocation at the start, summed over the
    devices used. CPU: the process's resident set size, sampled every `interval` seconds by a
    thread (torch releases the GIL in its kernels), peak minus the start, where the start is taken
    after returning freed heap memory to the OS (`perf.release_memory`), so an earlier, larger run
    does not inflate it. `ru_maxrss` and tracemalloc are no use here: the first is a lifetime
    peak, the second does not see torch's allocations. CPU numbers are approximate: memory the
    allocator cannot trim (fragmented arenas) still hides part of a run's growth, and short
    spikes between samples are missed.
    """

    def __init__(self, devices: Sequence[torch.device], interval: float = 0.002):
        self.cuda = [d for d in devices if d.type == "cuda"]
        self.interval = interval
        self.mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            self.start = {}
            for d in self.cuda:
                torch.cuda.synchronize(d)
                torch.cuda.reset_peak_memory_stats(d)
                self.start[d] = torch.cuda.memory_allocated(d)
        else:
            release_memory()
            self.start_rss = self.peak_rss = rss_bytes()
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            extra = 0
            for d in self.cuda:
                torch.cuda.synchronize(d)
                extra += torch.cuda.max_memory_allocated(d) - self.start[d]
        else:
            self.stop.set()
            self.thread.join()
            extra = max(self.peak_rss, rss_bytes()) - self.start_rss
        self.mb = extra / 2**20


def synchronize(devices: Sequence[torch.device]) -> None:
    for d in devices:
        if d.type == "cuda":
            torch.cuda.synchronize(d)


def timed_run(inpainter: Inpainter, image: Tensor, mask: Tensor) -> tuple[Tensor, float, float]:
    """-> (result (1, 3, h, w), seconds, peak MB)."""
    synchronize(inpainter.devices)
    with PeakMemory(inpainter.devices) as memory:
        start = time.perf_counter()
        result = inpainter(image, mask)
        synchronize(inpainter.devices)
        seconds = time.perf_counter() - start
    return result, seconds, memory.mb


# --- pictures and tables ------------------------------------------------------------------------


def with_hole(image: Tensor, mask: Tensor) -> Tensor:
    """The input as the network sees it, the hole shown in mid grey."""
    return image * (1 - mask) + 0.5 * mask


def side_by_side(panels: Sequence[tuple[str, Tensor]], gap: int = 4, header: int = 14) -> Image.Image:
    """(title, (1, 3, H, W) in [0, 1]) panels -> one RGB picture, titles above, white gaps between."""
    h = max(p.shape[-2] for _, p in panels)
    w = sum(p.shape[-1] for _, p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (w, h + header), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for title, panel in panels:
        canvas.paste(Image.fromarray(to_uint8(to_hwc(panel.clamp(0, 1)))), (x, header))
        draw.text((x + 2, 1), title, fill="black")
        x += panel.shape[-1] + gap
    return canvas


def fmt(value: float, metric: str) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return {
        "psnr": "{:.3f}",
        "ssim": "{:.4f}",
        "lpips": "{:.4f}",
        "hole_l1": "{:.5f}",
        "time_s": "{:.2f}",
        "peak_mem_mb": "{:.0f}",
    }.get(metric, "{}").format(value)


def markdown_table(rows: Sequence[dict[str, Any]], first: str, columns: Sequence[str]) -> str:
    head = [first, *(METRIC_TITLES.get(c, c) for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([str(row[first]), *(fmt(row[c], c) for c in columns)]) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def metrics_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The metrics the rows carry, in table order (LPIPS only where it was measured)."""
    return [m for m in ALL_METRICS if rows and all(m in r for r in rows)]


def means(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {m: float(np.mean([r[m] for r in rows])) for m in metrics_of(rows)} if rows else {}


def bin_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-image rows -> one row per non-empty LaMa mask-area bin (`lama_refine.metrics.stats`): the bin,
    its image count and the mean of every metric, plus the overall row."""
    table = []
    for name in bin_names():
        members = [r for r in rows if r["bin"] == name]
        if members:
            table.append({"bin": name, "n_images": len(members), **means(members)})
    table.append({"bin": "overall", "n_images": len(rows), **means(rows)})
    return table


# --- the app ------------------------------------------------------------------------------------


def result_dir(cfg: DictConfig) -> Path:
    """`outdir`; in a --multirun sweep, `<sweep dir>/<this job's setting>` (`lama_refine.batch.sweep`;
    `job<N>` where the sweep changes only result-neutral keys)."""
    if not in_sweep():
        return Path(to_absolute_path(cfg.outdir))
    hc = HydraConfig.get()
    return sweep_job_dir(Path(to_absolute_path(hc.sweep.dir)), f"job{hc.job.num}")


@dataclass
class Evaluation:
    rows: list[dict[str, Any]]
    mean: dict[str, float]
    setting: str
    directory: Path


def evaluate(cfg: DictConfig) -> Evaluation:
    """Run the configured pipeline over `cfg.gt_dir` and write the tables and pictures."""
    gt_dir = Path(to_absolute_path(cfg.gt_dir))
    mask_dir = Path(to_absolute_path(cfg.mask_dir)) if cfg.mask_dir else None
    samples = find_samples(
        gt_dir, mask_dir, cfg.masks.seed, cfg.max_images, exclude=[Path(to_absolute_path(cfg.outdir))]
    )
    if not samples:
        raise FileNotFoundError(f"no images under {gt_dir}")
    out = result_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    setting = out.name if in_sweep() else ("refined" if cfg.refine else "plain")
    masks = mask_dir or (
        "beside the photos" if samples[0].mask is not None else f"generated, {cfg.masks.family}, seed {cfg.masks.seed}"
    )
    log.info("%d images from %s (masks: %s) -> %s", len(samples), gt_dir, masks, out)

    records = ImageRecords(
        out / PER_IMAGE,
        settings_hash(cfg, resolve_devices(cfg.devices)),
        lambda: config_model_digest(cfg),
        earlier=earlier_sweeps(out) if in_sweep() else (),
    )
    # trace=DIR: the first `visuals` images' refinements; in a sweep, DIR/<this job's setting>
    tracer = Tracer(Path(to_absolute_path(cfg.trace)) / (out.name if in_sweep() else "")) if cfg.get("trace") else None
    inpainter: Inpainter | None = None  # built at the first image that needs measuring
    rows, kept, reused = [], [], 0
    perceptual = None  # LPIPS, loaded with the pipeline
    for i, sample in enumerate(tqdm(samples, desc="images", disable=not cfg.progress)):
        inputs = records.inputs(sample)
        row = records.reusable(sample, METRICS)
        if row is not None and (source := records.adopt(sample)) is not None:
            copy_pictures(source, out, sample.name)  # measured in an earlier sweep of this command
        traced = tracer is not None and i < cfg.visuals
        pictured = cfg.report and i < cfg.report_images  # report.html shows it
        wanted = (
            (i < cfg.visuals and not (out / "visuals" / f"{sample.name}.png").is_file())
            or (cfg.save_outputs and not (out / "outputs" / f"{sample.name}.png").is_file())
            or (tracer is not None and traced and not (tracer.root / safe_name(sample.name) / TRACE_JSON).is_file())
            or (pictured and not has_pictures(out, sample.name))
        )
        if row is not None and not wanted:
            rows.append(row)
            reused += 1
            continue
        if inpainter is None:
            inpainter = build_inpainter(cfg)
            if tracer is not None:
                hooks = dataclasses.replace(inpainter.hooks, on_scale=tracer.on_scale)
                inpainter = dataclasses.replace(inpainter, hooks=hooks)
            apply_process_settings(inpainter.perf)  # lama-refine-eval is an entry point
            perceptual = load_lpips_or_none(cfg.get("lpips"), inpainter.devices[0])
            if cfg.warmup:  # the first run pays for lazy initialisation (threads, kernels, the device split)
                inpainter(*load_sample(samples[0], cfg.masks.family))
        image, mask = load_sample(sample, cfg.masks.family)
        if tracer is not None and traced:
            tracer.start(sample.name)
        result, seconds, peak = timed_run(inpainter, image, mask)
        if tracer is not None and traced:
            tracer.finish()
        hole_fraction = float(mask.mean())
        row = {
            "image": sample.name,
            "hole_fraction": hole_fraction,
            "bin": bin_names()[area_bin(hole_fraction)],
            **image_metrics(result, image, mask),
            "time_s": seconds,
            "peak_mem_mb": peak,
        }
        if perceptual is not None:
            row["lpips"] = perceptual.distance(result, image)
        records.append(sample, row, inputs)
        rows.append(row)
        log.info("%s: %s", sample.name, ", ".join(f"{k} {fmt(row[k], k)}" for k in metrics_of([row])))
        if pictured:  # outputs/ and masks/ as save_outputs writes them, plus the input and the truth
            save_pictures(out, sample.name, with_hole(image, mask), image, result, mask)
        elif cfg.save_outputs:
            write_result(out / "outputs" / f"{sample.name}.png", result)
            if sample.mask is None:
                write_result(out / "masks" / f"{sample.name}_mask.png", mask.expand(-1, 3, -1, -1))
        if i < cfg.visuals:
            kept.append((sample, image, mask, result))

    if reused:
        log.info(
            "%d of %d images measured before under the same settings, model and inputs (%s): reused",
            reused,
            len(samples),
            out / PER_IMAGE,
        )
    if kept:  # plain LaMa for the pictures, after the measured runs (it moves the generator)
        assert inpainter is not None  # kept images were run
        plain = Inpainter(
            inpainter.generator,
            inpainter.pyramid,
            inpainter.refiner,
            inpainter.partitioner,
            inpainter.devices,
            refine=False,
            modulo=inpainter.modulo,
        )
        for sample, image, mask, result in kept:
            baseline = plain(image, mask) if cfg.refine else result
            if result.shape != image.shape:
                result = F.interpolate(result, size=image.shape[-2:], mode="bilinear", align_corners=False)
            picture = side_by_side(
                [
                    ("input", with_hole(image, mask)),
                    ("plain", baseline),
                    ("refined" if cfg.refine else "this run", result),
                    ("ground truth", image),
                ]
            )
            path = out / "visuals" / f"{sample.name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            picture.save(path)

    mean, metrics = means(rows), metrics_of(rows)
    table = rows + [{"image": "mean", "hole_fraction": float(np.mean([r["hole_fraction"] for r in rows])), **mean}]
    write_csv(out / "metrics.csv", table, ["image", "hole_fraction", "bin", *metrics])
    bins = bin_table(rows)
    write_csv(out / "bins.csv", bins, ["bin", "n_images", *metrics])
    (out / "metrics.md").write_text(
        f"# {setting}\n\n"
        + markdown_table(table, "image", metrics)
        + "\n## By the mask's share of the image (LaMa's bins)\n\n"
        + markdown_table(bins, "bin", ["n_images", *metrics])
    )
    # HydraConfig.get() is typed HydraConf (the schema); it returns the config's `hydra` DictConfig
    hydra_cfg = cast(DictConfig, HydraConfig.get()) if HydraConfig.initialized() else None
    summary = {
        "setting": setting,
        "job": OmegaConf.select(hydra_cfg, "job.num", default=0) if hydra_cfg else 0,
        "n_images": len(rows),
        "mean": mean,
        "bins": bins,
        "images": rows,
        "overrides": list(hydra_cfg.overrides.task) if hydra_cfg else [],
        "trace": str(tracer.root) if tracer is not None else None,  # report.html links its pages
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log.info("mean: %s -> %s", ", ".join(f"{k} {fmt(v, k)}" for k, v in mean.items()), out / "metrics.md")
    if cfg.report:
        log.info("report: %s", write_report(out))
    return Evaluation(rows, mean, setting, out)


# --- comparing the runs of a sweep --------------------------------------------------------------


def copy_pictures(source: Path, out: Path, name: str) -> None:
    """Image `name`'s pictures (the report's, the side-by-side, a saved output) from another run's
    folder into `out`, where `out` lacks them."""
    for relative in [*(kind.format(name) for kind in PICTURES.values()), f"visuals/{name}.png"]:
        src, dst = source / relative, out / relative
        if src.is_file() and not dst.exists():
            write_atomic(dst, functools.partial(shutil.copyfile, src))


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Each job's `summary.json` under the sweep dir, as one row per setting, in job order (its
    per-image rows and bins under `images` and `bins`, where the job wrote them)."""
    rows = []
    for path in sweep_dir.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        rows.append(
            {
                "job": summary["job"],
                "setting": summary["setting"],
                "n_images": summary["n_images"],
                **summary["mean"],
                "images": summary.get("images", []),
                "bins": summary.get("bins", []),
            }
        )
    return sorted(rows, key=lambda r: r["job"])


def pick_baseline(rows: Sequence[dict[str, Any]], baseline: Any) -> dict[str, Any]:
    """The row of the setting named `baseline` (as the sweep names its folders, case and spaces
    aside), of job number `baseline`, or the first setting when it is unset."""
    if baseline is None or baseline == "":
        return rows[0]
    key = str(baseline).replace(" ", "").lower()
    for row in rows:
        if row["setting"].replace(" ", "").lower() == key or str(row["job"]) == key:
            return row
    raise UserError(
        f"baseline={baseline}: not a setting of this sweep; its settings are "
        f"{', '.join(r['setting'] for r in rows)} (or their job numbers 0-{len(rows) - 1})"
    )


def paired_rows(rows: Sequence[dict[str, Any]], base: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """Every other setting against `base`, metric by metric, over the images both measured
    (`lama_refine.metrics.stats.paired`): one row per setting and metric."""
    base_images = {r["image"]: r for r in base["images"]}
    out = []
    for row in rows:
        if row is base:
            continue
        images = [r for r in row["images"] if r["image"] in base_images]
        if len(images) < len(row["images"]) or len(images) < len(base_images):
            log.warning(
                "%s and the baseline %s share %d of their images; only those are compared",
                row["setting"],
                base["setting"],
                len(images),
            )
        for metric in metrics_of(images + [base_images[r["image"]] for r in images]):
            p = paired(
                [base_images[r["image"]][metric] for r in images],
                [r[metric] for r in images],
                HIGHER_IS_BETTER[metric],
                seed=seed,
            )
            out.append(
                {
                    "setting": row["setting"],
                    "metric": metric,
                    "n_images": p.n,
                    "difference": p.mean,
                    "low": p.low,
                    "high": p.high,
                    "wins": p.wins,
                    "ties": p.ties,
                    "losses": p.losses,
                }
            )
    return out


def paired_markdown(pairs: Sequence[dict[str, Any]], base: str) -> str:
    lines = [
        f"Each setting minus the baseline **{base}**, per image: the mean difference, its 95 % bootstrap "
        "interval (images resampled, seeded) and the images won / tied / lost (better / equal / worse "
        "than the baseline on that image).\n",
        "| setting | metric | n | difference | 95 % interval | wins / ties / losses |",
        "|---|---|---|---|---|---|",
    ]
    for p in pairs:
        m = p["metric"]
        lines.append(
            f"| {p['setting']} | {METRIC_TITLES[m]} | {p['n_images']} | {signed(p['difference'], m)} | "
            f"[{signed(p['low'], m)}, {signed(p['high'], m)}] | {p['wins']} / {p['ties']} / {p['losses']} |"
        )
    return "\n".join(lines) + "\n"


def signed(value: float, metric: str) -> str:
    text = fmt(value, metric)
    return text if text.startswith("-") or text in ("inf", "nan") else "+" + text


def plot_comparison(
    rows: Sequence[dict[str, Any]],
    path: Path,
    metrics: Sequence[str] | None = None,
    pairs: Sequence[dict[str, Any]] = (),
    baseline: str | None = None,
) -> bool:
    """The comparison plot (`comparison_figure`); False (and a warning) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'lama-refine[eval]'): no plot written")
        return False
    fig = comparison_figure(rows, metrics, pairs=pairs, baseline=baseline)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def comparison_figure(
    rows: Sequence[dict[str, Any]],
    metrics: Sequence[str] | None = None,
    pairs: Sequence[dict[str, Any]] = (),
    baseline: str | None = None,
):
    """The comparison plot as a matplotlib figure (matplotlib must be installed). With `pairs`
    (`paired_rows`): one panel per metric, each setting's mean difference from the baseline with
    its 95 % interval as an error bar, on an axis that includes zero, so a gap is seen at its size
    next to no difference at all. Without: each setting's mean, a marker per setting."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    metrics = list(metrics) if metrics is not None else metrics_of(rows)
    if pairs:
        labels = list(dict.fromkeys(p["setting"] for p in pairs))
    else:
        labels = [r["setting"] for r in rows]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.2 * len(metrics), 2.6 + 0.12 * max(map(len, labels))), squeeze=False
    )
    x = range(len(labels))
    for ax, metric in zip(axes[0], metrics, strict=True):
        arrow = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
        if pairs:
            by_setting = {p["setting"]: p for p in pairs if p["metric"] == metric}
            values = [by_setting[s]["difference"] if s in by_setting else math.nan for s in labels]
            low = [v - by_setting[s]["low"] if s in by_setting else 0 for v, s in zip(values, labels, strict=False)]
            high = [by_setting[s]["high"] - v if s in by_setting else 0 for v, s in zip(values, labels, strict=False)]
            ax.errorbar(list(x), values, yerr=[low, high], fmt="o", color="tab:blue", capsize=3)
            ax.axhline(0, color="black", linewidth=0.8)
            finite = [
                v
                for v in values
                + [v - lo for v, lo in zip(values, low, strict=False)]
                + [v + h for v, h in zip(values, high, strict=False)]
                if math.isfinite(v)
            ]
            top, bottom = max(finite + [0.0]), min(finite + [0.0])
            pad = 0.15 * (top - bottom) or 1e-6
            ax.set_ylim(bottom - pad, top + pad)  # zero always on the axis: a 0.01 dB gap looks its size
            ax.set_title(f"{METRIC_TITLES[metric]}: minus {baseline}\n({arrow})", fontsize=8)
        else:
            values = [r[metric] for r in rows]
            # markers on an autoscaled axis: settings often differ in the third digit, which bars from 0 hide
            ax.plot(list(x), values, "o", color="tab:blue")
            ax.margins(y=0.25)
            ax.set_title(f"{METRIC_TITLES[metric]}\n({arrow})", fontsize=9)
        for xi, v in zip(x, values, strict=False):
            if math.isfinite(v):
                ax.annotate(
                    signed(v, metric) if pairs else fmt(v, metric),
                    (xi, v),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=6,
                )
        ax.set_xticks(list(x), labels, rotation=60, ha="right", fontsize=7)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.tick_params(axis="y", labelsize=7)
        # plain numbers: settings close together would otherwise read "1e-5+9.574e-1"
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def bins_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting and non-empty mask-area bin, from the jobs' summaries."""
    return [{"setting": r["setting"], **b} for r in rows for b in r["bins"]]


def write_comparison(sweep_dir: Path, baseline: Any = None, seed: int = 0) -> list[dict[str, Any]]:
    """comparison.csv, comparison.md and comparison.png in `sweep_dir`, from its jobs' summaries:
    the means per setting and, against `baseline` (a setting's name or job number; default the
    first setting), the paired differences (`paired_rows`); comparison_bins.csv per mask-area bin."""
    rows = collect(sweep_dir)
    if not rows:
        log.warning("no evaluation summaries under %s: nothing to compare", sweep_dir)
        return rows
    metrics = metrics_of(rows)
    base = pick_baseline(rows, baseline)
    pairs = paired_rows(rows, base, seed=seed) if all(r["images"] for r in rows) else []
    columns = ["setting", "n_images", *metrics]
    for metric in metrics:
        by_setting = {p["setting"]: p for p in pairs if p["metric"] == metric}
        for row in rows:
            p = by_setting.get(row["setting"])
            if p is not None:
                row.update(
                    {
                        f"{metric}_diff": p["difference"],
                        f"{metric}_low": p["low"],
                        f"{metric}_high": p["high"],
                        f"{metric}_wins": p["wins"],
                        f"{metric}_ties": p["ties"],
                        f"{metric}_losses": p["losses"],
                    }
                )
        if pairs:
            columns += [f"{metric}_{k}" for k in ("diff", "low", "high", "wins", "ties", "losses")]
    write_csv(sweep_dir / "comparison.csv", rows, columns)
    text = markdown_table(rows, "setting", ["n_images", *metrics])
    if pairs:
        text += "\n## Paired differences\n\n" + paired_markdown(pairs, base["setting"])
    per_bin = bins_rows(rows)
    if per_bin:
        write_csv(sweep_dir / "comparison_bins.csv", per_bin, ["setting", "bin", "n_images", *metrics])
        text += "\n## By the mask's share of the image (LaMa's bins)\n\n" + bin_markdown(per_bin, metrics)
    (sweep_dir / "comparison.md").write_text(text)
    plot_comparison(rows, sweep_dir / "comparison.png", metrics, pairs=pairs, baseline=base["setting"])
    log.info("comparison of %d settings against %s: %s", len(rows), base["setting"], sweep_dir / "comparison.md")
    return rows


def bin_markdown(per_bin: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    head = ["setting", "bin", "n_images", *(METRIC_TITLES[m] for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in per_bin:
        lines.append(
            "| " + " | ".join([r["setting"], r["bin"], str(r["n_images"]), *(fmt(r[m], m) for m in metrics)]) + " |"
        )
    return "\n".join(lines) + "\n"


class SweepComparison(Callback):
    """Hydra callback: after a --multirun sweep, one table and one plot comparing its settings."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(to_absolute_path(config.hydra.sweep.dir))
        try:
            write_comparison(sweep_dir, config.get("baseline"), seed=int(config.get("bootstrap_seed", 0)))
            if config.get("report", False) and any(sweep_dir.glob("*/summary.json")):
                log.info("report: %s", write_report(sweep_dir, sweep=True))
        except UserError as e:  # the jobs are done and kept; only the comparison is not written
            log.error("%s; rerun the comparison with write_comparison(%r, baseline=...)", e, str(sweep_dir))


@hydra.main(config_path=str(conf_dir()), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(read_config(cfg))
    except (UserError, FileNotFoundError) as e:  # a mask without its photo, a folder without images
        if wants_traceback(cfg):
            raise
        if HydraConfig.get().mode == RunMode.RUN:
            log.error("%s", e)
            sys.exit(getattr(e, "exit_code", 2))
        raise


def entry() -> None:
    """The console script, as `lama-refine`'s (`cli.entry`): the command line is checked first
    (`usage.check_eval_command_line`), so a mistake is one message, the usage and exit status 2
    before Hydra starts; `debug=true` or HYDRA_FULL_ERROR=1 show the traceback instead. Hydra's
    own flags (--help, --cfg, ...) go straight to Hydra."""
    argv = sys.argv[1:]
    flags = [a for a in argv if a.startswith("-")]
    overrides = quote_value([a for a in argv if not a.startswith("-")], "baseline")
    if all(f in ("-m", "--multirun") for f in flags):
        try:
            check_eval_command_line(overrides, multirun=bool(flags))
        except UserError as e:
            if wants_traceback(argv):
                raise
            print(f"lama-refine-eval: {e}", file=sys.stderr)
            print(EVAL_USAGE, file=sys.stderr)
            sys.exit(e.exit_code)
    sys.argv = [sys.argv[0], *flags, *overrides]
    main()


if __name__ == "__main__":
    entry()
