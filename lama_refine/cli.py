"""`lama-refine`: the Hydra app that inpaints a folder (LaMa's layout or images + masks)."""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
import torch
from tqdm import tqdm

from .allocator import reexec_with_preload
from .batch import MANIFEST, Batch, BatchFailed, Manifest, Shard, Summary, config_hash
from .config import build_inpainter, conf_dir, resolve_gpu_ids
from .io import OUTPUT_SUFFIXES, MaskRule, find_jobs
from .pipeline import Inpainter
from .sweep import sweep_job_dir

log = logging.getLogger("lama_refine")


def job_outdir(cfg: DictConfig) -> Path:
    """`outdir`; in a --multirun sweep, `outdir/<this job's swept settings>` (e.g.
    `outdir/refine=false`, `lama_refine.sweep`), so the jobs of a sweep neither overwrite nor skip
    each other's outputs. Keys that cannot change an output (`RESULT_NEUTRAL_KEYS`, e.g. a `shard`
    sweep) share one folder."""
    return sweep_job_dir(Path(to_absolute_path(cfg.outdir)))


class ScaleProgress:
    """A nested tqdm bar over one image's scales and iterations, showing the current loss."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: tqdm | None = None

    def __call__(self, scale: int, n_scales: int, it: int, n_iters: int, loss) -> None:
        if not self.enabled:
            return
        if it == 0:
            self.close()
            self.bar = tqdm(total=n_iters, desc=f"scale {scale + 1}/{n_scales}", leave=False, position=1)
        self.bar.update(1)
        if loss is not None:
            self.bar.set_postfix(loss=f"{float(loss):.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def mask_rule(cfg: DictConfig) -> MaskRule:
    m = cfg.get("mask") or {}
    return MaskRule(threshold=float(m.get("threshold", 0)), invert=bool(m.get("invert", False)),
                    dilate=int(m.get("dilate", 0)), resize=bool(m.get("resize", False)),
                    from_alpha=bool(m.get("from_alpha", False)))


def shard_config(cfg: DictConfig, shard: Shard | None) -> DictConfig:
    """With `shard` and no `devices`, each shard takes its own GPUs (Shard.devices), so
    `--multirun shard=0/4,...,3/4` on a 4-GPU machine runs one shard per GPU."""
    if shard is None or cfg.devices is not None:
        return cfg
    if not torch.cuda.is_available():
        return cfg
    cfg = cfg.copy()
    cfg.devices = shard.devices(torch.cuda.device_count())
    log.info("shard %s runs on %s", shard, list(cfg.devices))
    return cfg


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (a cluster's pre-emption, `kill`) into SystemExit, so the output being written
    is cleaned up and the summary printed as on Ctrl-C; the next run resumes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def run(cfg: DictConfig) -> Summary:
    """Inpaint every job of `cfg.indir` (this shard's) into the job's outdir; one bad file never
    stops the batch."""
    cfg = resolve_gpu_ids(cfg)  # from here on `devices` alone says where to run
    if cfg.out_ext.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"out_ext={cfg.out_ext!r} is not supported; use one of {OUTPUT_SUFFIXES}")
    indir, outdir = Path(to_absolute_path(cfg.indir)), job_outdir(cfg)
    maskdir = cfg.get("maskdir")
    maskdir = Path(to_absolute_path(maskdir)) if maskdir else None
    rule, shard = mask_rule(cfg), Shard.parse(cfg.get("shard"))
    base_outdir = Path(to_absolute_path(cfg.outdir))
    if indir.resolve().is_relative_to(base_outdir.resolve()):
        raise ValueError(f"indir {indir} lies inside outdir {base_outdir}: outputs and inputs would mix; "
                         "choose an outdir outside indir (an outdir inside indir is fine)")
    everything = find_jobs(indir, maskdir, from_alpha=rule.from_alpha, exclude=[base_outdir])
    jobs = shard.select(everything) if shard else everything
    log.info("%d jobs under %s%s -> %s", len(everything), indir,
             f", shard {shard}: {len(jobs)} of them" if shard else "", outdir)
    progress = ScaleProgress(cfg.progress)
    cfg = shard_config(cfg, shard)

    def make_inpainter() -> Inpainter:
        inpainter = build_inpainter(cfg)
        inpainter.refiner.progress = progress
        return inpainter

    batch = Batch(outdir=outdir, make_inpainter=make_inpainter, out_ext=cfg.out_ext,
                  out_quality=int(cfg.get("out_quality", 95)), overwrite=cfg.overwrite, rule=rule,
                  manifest=Manifest(outdir / MANIFEST if cfg.get("manifest", True) else None),
                  config_hash=config_hash(cfg), shard=shard, progress=cfg.progress, on_image_end=progress.close)
    with sigterm_as_exit():
        return batch.run(jobs)


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    summary = run(cfg)
    if summary.failed:
        if HydraConfig.get().mode == RunMode.RUN:
            sys.exit(1)
        # SystemExit would end the whole sweep; an exception ends only this job, and Hydra
        # re-raises it once every job of the sweep has run.
        raise BatchFailed(f"{len(summary.failed)} file(s) failed in this job; see its summary above")


def entry() -> None:
    """The console script: preload `perf.allocator`'s library if asked (a re-exec), then the app."""
    reexec_with_preload(sys.argv[1:])
    main()


if __name__ == "__main__":
    entry()
