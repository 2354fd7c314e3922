"""`lama-refine`: the Hydra app that inpaints a folder (LaMa's layout or images + masks), or one
image (`image= mask= out=`).

The console script checks the command line first (lama_refine.app.usage): a mistake is one message
and exit status 2, before Hydra makes a log folder; `debug=true` or HYDRA_FULL_ERROR=1 show the
traceback instead. One image runs without Hydra's run folder: nothing is written but `out`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from lama_refine.app.progress import ScaleProgress
from lama_refine.app.trace import Tracer
from lama_refine.app.usage import USAGE, check_command_line, is_single_image, selectable_groups, sweeps
from lama_refine.batch.provenance import config_model_digest
from lama_refine.batch.runner import (
    MANIFEST,
    Batch,
    BatchFailed,
    Manifest,
    SetupError,
    Shard,
    Summary,
    config_hash,
    legacy_config_hash,
)
from lama_refine.batch.slurm import own_allocation, register_launcher
from lama_refine.batch.sweep import sweep_job_dir
from lama_refine.config import build_inpainter, conf_dir, perf_config, read_config
from lama_refine.errors import UserError
from lama_refine.io import OUTPUT_SUFFIXES, Job, MaskRule, check_output_suffix, find_jobs, why_no_jobs
from lama_refine.parts.refine import RefineHooks
from lama_refine.perf.allocator import reexec_with_preload
from lama_refine.perf.switches import apply_process_settings
from lama_refine.pipeline import Inpainter

log = logging.getLogger("lama_refine")


def job_outdir(cfg: DictConfig) -> Path:
    """`outdir`; in a --multirun sweep, `outdir/<this job's swept settings>` (e.g.
    `outdir/refine=false`, `lama_refine.batch.sweep`), so the jobs of a sweep neither overwrite nor skip
    each other's outputs. Keys that cannot change an output (`RESULT_NEUTRAL_KEYS`, e.g. a `shard`
    sweep) share one folder."""
    return sweep_job_dir(Path(to_absolute_path(cfg.outdir)))


def mask_rule(cfg: DictConfig) -> MaskRule:
    return MaskRule.from_config(cfg.get("mask"))


def shard_config(cfg: DictConfig, shard: Shard | None) -> DictConfig:
    """With `shard` and no `devices`, each shard takes its own GPUs (Shard.devices), so
    `--multirun shard=0/4,...,3/4` on a 4-GPU machine runs one shard per GPU; a SLURM job of
    its own takes every GPU SLURM gave it (`slurm.own_allocation`)."""
    if shard is None or cfg.devices is not None:
        return cfg
    if not torch.cuda.is_available():
        return cfg
    cfg = cfg.copy()
    n_gpus = torch.cuda.device_count()
    cfg.devices = [f"cuda:{i}" for i in range(n_gpus)] if own_allocation() else shard.devices(n_gpus)
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


def make_tracer(cfg: DictConfig, sweep: bool = False) -> Tracer | None:
    """`trace=DIR`'s writer (None without `trace`); in a sweep, `DIR/<this job's setting>`."""
    if not cfg.get("trace"):
        return None
    root = Path(to_absolute_path(cfg.trace))
    return Tracer(sweep_job_dir(root) if sweep else root)


def traced_batch(tracer: Tracer | None, progress: ScaleProgress) -> dict[str, Any]:
    """Batch's per-image callbacks: close the progress bar and, with a tracer, begin the trace,
    forget an out-of-memory try's scales, and write it."""
    if tracer is None:
        return {"on_image_end": progress.close}

    def end() -> None:
        progress.close()
        tracer.finish()

    return {
        "on_image_start": lambda job: tracer.start(str(job.relative.with_suffix(""))),
        "on_image_retry": lambda job: tracer.discard(),
        "on_image_end": end,
    }


def make_batch_inpainter(cfg: DictConfig, progress: ScaleProgress, tracer: Tracer | None = None):
    """Builds the pipeline on first use (a batch whose outputs all exist loads no model) and
    applies its process-wide `perf` settings then: the CLI is their entry point."""

    def make() -> Inpainter:
        hooks = RefineHooks(progress=progress, on_scale=None if tracer is None else tracer.on_scale)
        inpainter = dataclasses.replace(build_inpainter(cfg), hooks=hooks)
        apply_process_settings(inpainter.perf)
        return inpainter

    return make


def run(cfg: DictConfig) -> Summary:
    """Inpaint every job of `cfg.indir` (this shard's) into the job's outdir; one bad file never
    stops the batch."""
    cfg = read_config(cfg)  # Hydra's copy of the config is read here: from now on `devices` alone says where to run
    check_output_suffix(cfg.out_ext)
    indir, outdir = Path(to_absolute_path(cfg.indir)), job_outdir(cfg)
    maskdir = cfg.get("maskdir")
    maskdir = Path(to_absolute_path(maskdir)) if maskdir else None
    rule, shard = mask_rule(cfg), Shard.parse(cfg.get("shard"))
    base_outdir = Path(to_absolute_path(cfg.outdir))
    if indir.resolve().is_relative_to(base_outdir.resolve()):
        raise UserError(
            f"indir={cfg.indir} lies inside outdir={cfg.outdir}: outputs and inputs would mix; "
            "choose an outdir outside indir (an outdir inside indir is fine)"
        )
    # a trace folder inside indir holds *_mask*.png pictures that must not become jobs
    skipped = [base_outdir, *([Path(to_absolute_path(cfg.trace))] if cfg.get("trace") else [])]
    everything = find_jobs(indir, maskdir, from_alpha=rule.from_alpha, exclude=skipped)
    if not everything and maskdir is None and not rule.from_alpha:
        why = why_no_jobs(indir, exclude=skipped)
        if why:  # "0 jobs" and exit 0 would read as success
            raise UserError(why)
    jobs = shard.select(everything) if shard else everything
    log.info(
        "%d jobs under %s%s -> %s",
        len(everything),
        indir,
        f", shard {shard}: {len(jobs)} of them" if shard else "",
        outdir,
    )
    progress = ScaleProgress(cfg.progress)
    cfg = shard_config(cfg, shard)
    tracer = make_tracer(cfg, sweep=True)
    batch = Batch(
        outdir=outdir,
        make_inpainter=make_batch_inpainter(cfg, progress, tracer),
        out_ext=cfg.out_ext,
        out_quality=int(cfg.get("out_quality", 95)),
        overwrite=cfg.overwrite,
        rule=rule,
        manifest=Manifest(outdir / MANIFEST if cfg.get("manifest", True) else None),
        config_hash=config_hash(cfg),
        legacy_hash=legacy_config_hash(cfg),
        model_digest=lambda: config_model_digest(cfg),
        shard=shard,
        progress=cfg.progress,
        **traced_batch(tracer, progress),
    )
    with sigterm_as_exit():
        return batch.run(jobs)


def run_single(cfg: DictConfig) -> Summary:
    """`image= mask= out=`: one image through the batch's machinery (mask rules, empty and full
    masks, out-of-memory retry, atomic write), with `out`'s folder as the outdir and no manifest."""
    out = Path(to_absolute_path(cfg.out))
    mask = cfg.mask.get("file")
    job = Job(Path(to_absolute_path(cfg.image)), Path(to_absolute_path(mask)) if mask else None, Path(out.name))
    progress = ScaleProgress(cfg.progress)
    tracer = make_tracer(cfg)
    batch = Batch(
        outdir=out.parent,
        make_inpainter=make_batch_inpainter(cfg, progress, tracer),
        out_ext=out.suffix,
        out_quality=int(cfg.get("out_quality", 95)),
        overwrite=True,
        rule=mask_rule(cfg),
        progress=False,
        **traced_batch(tracer, progress),
        report=False,
    )
    with sigterm_as_exit():
        return batch.run([job], resume=False)


def failed(message: str, code: int, usage: bool = True) -> None:
    """The end of a command that cannot go on: the message, the usage, the exit status."""
    print(f"lama-refine: {message}", file=sys.stderr)
    if usage:
        print(USAGE, file=sys.stderr)
    sys.exit(code)


def wants_traceback(cfg_or_argv) -> bool:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return True
    if isinstance(cfg_or_argv, DictConfig):
        return bool(cfg_or_argv.get("debug"))
    return any(a.replace(" ", "").lower() in ("debug=true", "debug=1", "debug=yes") for a in cfg_or_argv)


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        summary = run(cfg)
    except (UserError, SetupError) as e:
        if wants_traceback(cfg):
            raise
        if HydraConfig.get().mode == RunMode.RUN:
            log.error("%s", e)
            sys.exit(getattr(e, "exit_code", 2))
        raise BatchFailed(str(e)) from None
    if summary.failed:
        if HydraConfig.get().mode == RunMode.RUN:
            sys.exit(1)
        # SystemExit would end the whole sweep; an exception ends only this job, and Hydra
        # re-raises it once every job of the sweep has run.
        raise BatchFailed(f"{len(summary.failed)} file(s) failed in this job; see its summary above")


def groups_help() -> str:
    """--help's list of parts: each group chosen by `group=option`, with its options."""
    groups = selectable_groups(conf_dir())
    width = max(len(g) for g in groups)
    lines = [f"  {g + '=':<{width + 1}} {' | '.join(options)}" for g, options in groups.items()]
    lines.append("  (the mask downsampler is picked twice: pyramid_mask= for the pyramid, loss_mask= for the loss)")
    return "\n".join(lines)


OmegaConf.register_new_resolver("lama_refine_groups", groups_help, replace=True)


def shorthand(overrides: list[str]) -> list[str]:
    """`mask=FILE` means `mask.file=FILE` (the `mask` section holds the mask rules)."""
    return [
        f"mask.file={o.split('=', 1)[1]}" if o.startswith("mask=") and not o[5:].lstrip().startswith("{") else o
        for o in overrides
    ]


def entry() -> None:
    """The console script: check the command line, preload `perf.allocator`'s library if the
    checked config asks for one (a re-exec), then one image here or a folder through the Hydra app."""
    argv = sys.argv[1:]
    flags = [a for a in argv if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags):
        main()  # --help, --cfg, --config-dir ...: Hydra's own flags, answered or checked by Hydra
        return
    multirun = bool(flags)
    overrides = shorthand([a for a in argv if not a.startswith("-")])
    try:
        cfg = check_command_line(overrides, OUTPUT_SUFFIXES)
        if not sweeps(overrides, "perf.allocator"):  # a sweep's jobs each say whether they got theirs
            reexec_with_preload(perf_config(cfg).allocator)
        if is_single_image(cfg):
            if multirun:
                raise UserError("--multirun sweeps folders (indir= outdir=); one image runs without it")
            logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] - %(message)s")
            summary = run_single(cfg)
            sys.exit(1 if summary.failed else 0)  # the failure is logged already, in one line
    except SetupError as e:
        if wants_traceback(argv):
            raise
        failed(str(e), 2, usage=False)
    except UserError as e:
        if wants_traceback(argv):
            raise
        failed(str(e), e.exit_code)
    sys.argv = [sys.argv[0], *flags, *overrides]
    if multirun:
        register_launcher()
    main()


if __name__ == "__main__":
    entry()
