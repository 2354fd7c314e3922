"""`lama-refine`: the Hydra app that inpaints a folder in LaMa's layout."""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .config import build_inpainter, conf_dir
from .io import OUTPUT_SUFFIXES, InputError, Job, find_jobs, read_image, read_mask, write_result
from .pipeline import Inpainter

log = logging.getLogger("lama_refine")


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{len(self.done)} done, {len(self.skipped)} skipped (output exists), {len(self.failed)} failed"]
        lines += [f"  failed: {reason}" for _, reason in self.failed]
        return "\n".join(lines)


def swept_keys(sweep_dir: Path) -> list[str]:
    """The keys a --multirun command line sweeps (`refine=true,false` -> `refine`), read from the
    `multirun.yaml` Hydra writes to the sweep folder before it launches the jobs."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        return []
    overrides = OmegaConf.load(saved).hydra.overrides.task
    return [o.get_key_element() for o in OverridesParser.create().parse_overrides(list(overrides))
            if o.is_sweep_override()]


def job_outdir(cfg: DictConfig) -> Path:
    """`outdir`; in a --multirun sweep, `outdir/<this job's swept settings>` (e.g.
    `outdir/refine=false`), so the jobs of a sweep neither overwrite nor skip each other's
    outputs. Keys that do not change results (`hydra.job.config.override_dirname.exclude_keys`,
    e.g. a `shard` sweep) share one folder."""
    outdir = Path(to_absolute_path(cfg.outdir))
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return outdir
    hc = HydraConfig.get()
    excluded = set(hc.job.config.override_dirname.exclude_keys)
    swept = [k for k in swept_keys(Path(hc.sweep.dir)) if k not in excluded]
    own = dict(o.split("=", 1) for o in hc.overrides.task if "=" in o)
    parts = [f"{k}={own[k]}".replace(os.sep, "_") for k in swept if k in own]
    return outdir / ",".join(parts) if parts else outdir


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


def inpaint_one(inpainter: Inpainter, job: Job, out: Path) -> None:
    image, mask = read_image(job.image), read_mask(job.mask)
    if image.shape[-2:] != mask.shape[-2:]:
        raise InputError(f"{job.mask}: mask is {tuple(mask.shape[-2:])} but its image {job.image} is "
                         f"{tuple(image.shape[-2:])} (height, width)")
    try:
        result = inpainter(image, mask)
    except ValueError as e:  # e.g. too small to pad; name the file
        raise InputError(f"{job.image}: {e}") from e
    write_result(out, result)


def run(cfg: DictConfig) -> Summary:
    """Inpaint every job of `cfg.indir` into the job's outdir; one bad file never stops the batch."""
    if cfg.out_ext not in OUTPUT_SUFFIXES:
        raise ValueError(f"out_ext={cfg.out_ext!r} is not supported; use one of {OUTPUT_SUFFIXES}")
    indir, outdir = Path(to_absolute_path(cfg.indir)), job_outdir(cfg)
    jobs = find_jobs(indir)
    log.info("%d masks under %s -> %s", len(jobs), indir, outdir)
    inpainter = build_inpainter(cfg)
    progress = ScaleProgress(cfg.progress)
    inpainter.refiner.progress = progress
    summary = Summary()
    for job in tqdm(jobs, desc="images", disable=not cfg.progress, position=0):
        out = job.output(outdir, cfg.out_ext)
        if out.exists() and not cfg.overwrite:
            summary.skipped.append(out)
            continue
        start = time.perf_counter()
        try:
            inpaint_one(inpainter, job, out)
        except InputError as e:
            log.error("%s", e)
            summary.failed.append((job.mask, str(e)))
            continue
        finally:
            progress.close()
        summary.done.append(out)
        log.info("%s -> %s (%.1f s)", job.mask, out, time.perf_counter() - start)
    log.info("%s", summary.report())
    return summary


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    summary = run(cfg)
    if summary.failed and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)


if __name__ == "__main__":
    main()
