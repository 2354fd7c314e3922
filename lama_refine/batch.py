"""Batch processing: one folder of jobs, never stopped by one file, resumable, shardable.

- `Summary`: what was done, skipped and failed (with reasons), printed at the end.
- `Manifest`: one JSON line per processed file in `outdir/manifest.jsonl`, each line a single
  `O_APPEND` write, so shard processes on one machine can share the file.
- `Shard`: `shard=i/n` keeps the jobs whose index k in the sorted list has `k % n == i`.
- out-of-memory retries: `oom_retry_plan` lists what to change for each retry.
- `Batch.run`: the loop.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .errors import describe_os_error
from .io import InputError, Inputs, Job, MaskRule, load_inputs, output_is_intact, stale_temporaries, write_result
from .perf import release_memory
from .pipeline import Inpainter
from .refine import Refinement

log = logging.getLogger("lama_refine")

MANIFEST = "manifest.jsonl"
# Keys that do not change an output: left out of the config hash.
UNHASHED_KEYS = ("indir", "outdir", "maskdir", "devices", "overwrite", "progress", "shard", "manifest", "image",
                 "out", "debug")


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[tuple[Path, str]] = field(default_factory=list)  # done, but worth a look (empty mask, ...)
    redone: list[Path] = field(default_factory=list)  # existed, made under another config: made again
    unrecorded: list[Path] = field(default_factory=list)  # skipped, with no manifest line to judge them by

    def report(self) -> str:
        redone = f"{len(self.redone)} redone (config changed), " if self.redone else ""
        lines = [f"{len(self.done)} done, {redone}{len(self.skipped)} skipped (output exists), "
                 f"{len(self.failed)} failed"]
        lines += [f"  failed: {reason}" for _, reason in self.failed]
        lines += [f"  note: {path}: {note}" for path, note in self.notes]
        return "\n".join(lines)


def results_line(outdir: Path, summary: Summary, jobs: Sequence[Job]) -> str | None:
    """The run's last line: where the results are, one example path, and what names them."""
    outputs = summary.done + summary.redone + summary.skipped
    if not outputs:
        return None
    after_mask = any(j.mask is not None and j.relative.stem == j.mask.stem != j.image.stem for j in jobs)
    naming = ("named after their masks, as LaMa names them; indir=photos maskdir=masks names them after the photos"
              if after_mask else "named after the photos")
    return f"results: {len(outputs)} in {outdir}, e.g. {outputs[0]} ({naming})"


class SetupError(RuntimeError):
    """Building the inpainter failed (model, devices): no file can be done, so the batch stops."""


class BatchFailed(RuntimeError):
    """Raised at the end of a --multirun job that had failures, so that the sweep exits non-zero
    after every job has run (Hydra re-raises a job's exception once the batch of jobs is over)."""


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------

# Switches added after manifests began recording config hashes, each with its "off" value: left
# out of the hash while off, so an upgrade does not make every existing output look "made under
# another config" (reruns redo those); once switched on they count like any key.
LATER_SWITCHES_OFF: dict[str, Any] = {
    "refiner.stop": {"_target_": "lama_refine.refine.EarlyStop", "tol": None, "patience": None},
    "refiner.warm_start": False,
    "mask.max_hole": 0.5,  # decides only whether a file fails
    "mask.lossy_threshold": 127,  # acts on JPEG masks only; PNG masks' outputs are as before
}
# Keys that only decide where memory comes from and when it goes back to the system: outputs are
# bit-identical under any of their values (docs/benchmarks.md), so each is hashed as one fixed
# value: the one every hash saw before (perf.allocator: null, its default until `auto`), or none
# (LEFT_OUT: the key came later). Changing the default to auto, or running under another
# allocator, keeps existing outputs.
LEFT_OUT = object()
MEMORY_ONLY_KEYS: dict[str, Any] = {"perf.allocator": None, "perf.malloc_trim": LEFT_OUT}


def _parent(data: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
    """The dict holding dotted `key` in `data` ({} where its section is missing), and its last part."""
    section, _, name = key.rpartition(".")
    parent = data.get(section) if section else data
    return (parent if isinstance(parent, dict) else {}), name


def config_hash(cfg: DictConfig) -> str:
    """12 hex digits of the resolved config, without the keys that do not change results: two
    outputs with one hash were made the same way."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in UNHASHED_KEYS:
        data.pop(key, None)
    data.get("refiner", {}).pop("gpu_ids", None)
    data.get("mask", {}).pop("file", None)
    for key, off in LATER_SWITCHES_OFF.items():
        parent, name = _parent(data, key)
        if parent.get(name, off) == off:
            parent.pop(name, None)
    for key, hashed_as in MEMORY_ONLY_KEYS.items():
        parent, name = _parent(data, key)
        if name in parent:
            if hashed_as is LEFT_OUT:
                del parent[name]
            else:
                parent[name] = hashed_as
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Manifest:
    """Appends one JSON object per line to `path` (None: records nothing).

    Each line is written by a single `os.write` on a descriptor opened with O_APPEND, so lines
    from several processes on one machine never interleave. On NFS, O_APPEND is not atomic
    across machines: give each node its own outdir or accept that lines may clash there."""

    def __init__(self, path: Path | None):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = (json.dumps(record, default=str, allow_nan=False) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as e:  # the outputs matter more than their record: go on
            log.error("%s: cannot append to the manifest (%s)", self.path, e)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Every record of a manifest file (for tests and users' scripts)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def output_hashes(path: Path) -> dict[str, str]:
    """The config hash each output was last made under, by its path relative to outdir, from a
    manifest file (a line that cannot be read is passed over: another run may be appending)."""
    if not path.is_file():
        return {}
    made: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("status") == "done" and record.get("output"):
            made[str(record["output"])] = str(record.get("config_hash"))
    return made


OVERWRITE_MODES = (False, True, "never")
"""`overwrite`: false redoes an output only if it was made under another config (or is damaged);
true redoes every output; never keeps every existing output, whatever made it."""


def overwrite_mode(value: Any) -> bool | str:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if value not in OVERWRITE_MODES or (isinstance(value, int) and not isinstance(value, bool)):
        raise ValueError(f"overwrite={value!r}: expected false (redo outputs whose config changed), "
                         "true (redo all) or never (keep every existing output)")
    return value


@dataclass(frozen=True)
class Redo:
    """Why an existing output is made again; `replaced`: the config hash it was made under,
    when that is the reason (the summary counts these as "redone (config changed)")."""

    reason: str
    replaced: str | None = None


def finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
# Sharding
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shard:
    """`i/n`: job k of the sorted list belongs to shard k % n (round-robin, so that runs of big
    files in one folder spread over the shards). Every shard must see the same folder."""

    index: int
    count: int

    @classmethod
    def parse(cls, value: Any) -> Shard | None:
        if value is None:
            return None
        try:
            index, count = (int(part) for part in str(value).split("/"))
        except ValueError:
            raise ValueError(f"shard={value!r}: expected i/n, e.g. shard=0/4") from None
        if not 0 <= index < count:
            raise ValueError(f"shard={value!r}: i must be in 0..n-1")
        return cls(index, count)

    def select(self, jobs: Sequence[Job]) -> list[Job]:
        return list(jobs[self.index::self.count])

    def devices(self, n_gpus: int) -> list[str]:
        """The GPUs of this shard when `devices` is unset: with at least as many GPUs as shards,
        an equal block each (8 GPUs, 4 shards: 2 each); else GPU i % n_gpus."""
        if n_gpus >= self.count:
            per = n_gpus // self.count
            return [f"cuda:{self.index * per + j}" for j in range(per)]
        return [f"cuda:{self.index % n_gpus}"]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# ---------------------------------------------------------------------------------------------
# Out-of-memory retries
# ---------------------------------------------------------------------------------------------

OOM_MESSAGES = ("out of memory", "can't allocate", "cannot allocate", "unable to allocate")

# A retry: a context manager that changes the inpainter for one more try and undoes the change
# on exit; it yields a description for the log and manifest, or None where it does not apply.
Retry = Callable[[Inpainter], ContextManager["str | None"]]


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or a RuntimeError saying so (CPU
    allocations, other backends)."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in OOM_MESSAGES)


@contextlib.contextmanager
def halved_px_budget(inpainter: Inpainter) -> Iterator[str | None]:
    """Refine a smaller working image (the pyramid's pixel budget halved, through the
    `PyramidBuilder.pixel_budget` / `with_pixel_budget` contract); the output keeps the input's
    size (`output.match_input_size`). Does not apply to plain inference, nor to a pyramid without
    a budget (said in the log)."""
    pyramid = inpainter.pyramid
    budget = pyramid.pixel_budget() if inpainter.refine else None
    if budget is None:
        if inpainter.refine:
            log.warning("pyramid %s has no pixel budget (PyramidBuilder.pixel_budget() is None): no retry at a "
                        "smaller size", type(pyramid).__name__)
        yield None
        return
    inpainter.pyramid = pyramid.with_pixel_budget(max(1, budget // 2))
    try:
        yield f"px_budget {budget} -> {inpainter.pyramid.pixel_budget()}"
    finally:
        inpainter.pyramid = pyramid


def oom_retry_plan(inpainter: Inpainter) -> list[Retry]:
    """The retries after an out-of-memory error, in order; each is tried once, then the file is
    recorded as failed. Today: half the pixel budget. (Activation checkpointing, `perf.checkpointing`,
    could join it, e.g. before or with the smaller budget.)"""
    return [halved_px_budget]


@dataclass
class Attempts:
    """What the tries of one file went through, for the log and the manifest."""

    count: int = 0
    changes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def inpaint_with_retries(inpainter: Inpainter, inputs: Inputs, name: Path,
                         plan: Callable[[Inpainter], list[Retry]] = oom_retry_plan) -> tuple[Refinement, Attempts]:
    """Run the inpainter; after an out-of-memory error free memory and go through `plan`. Raises
    InputError naming the file once the plan is exhausted; other errors propagate."""
    attempts = Attempts()
    retries: list[Retry | None] = [None, *plan(inpainter)]
    for retry in retries:
        with (retry(inpainter) if retry else contextlib.nullcontext("first try")) as change:
            if change is None:
                continue  # this retry does not apply to this inpainter
            if retry is not None:
                attempts.changes.append(change)
                log.warning("%s: out of memory; retrying with %s", name, change)
            attempts.count += 1
            try:
                return inpainter.run(inputs.image, inputs.mask), attempts
            except Exception as e:  # noqa: BLE001 - sorted right below
                if not is_out_of_memory(e):
                    raise
                attempts.errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        release_memory()  # outside the except block: the traceback no longer pins the tensors
    tried = "; retried with " + ", ".join(attempts.changes) if attempts.changes else ""
    raise InputError(f"{name}: out of memory ({attempts.errors[-1]}){tried}")


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is over, then deliver them: Ctrl-C or a kill never
    separates an output from its manifest line (SIGKILL cannot be held; its window is tiny)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if received:
            signal.raise_signal(received[0])


@dataclass
class Batch:
    """Everything the loop needs besides the jobs. `inpainter` is built on first use, so a batch
    whose outputs all exist loads no model."""

    outdir: Path
    make_inpainter: Callable[[], Inpainter]
    out_ext: str = ".png"
    out_quality: int = 95
    overwrite: bool | str = False  # see OVERWRITE_MODES
    rule: MaskRule = MaskRule()
    manifest: Manifest = field(default_factory=lambda: Manifest(None))
    config_hash: str = ""
    shard: Shard | None = None
    progress: bool = True
    on_image_end: Callable[[], None] = lambda: None  # e.g. close the per-scale progress bar
    report: bool = True  # log the summary at the end (one image says it all in its own line)
    _inpainter: Inpainter | None = None
    _stale: dict[Path, list[Path]] = field(default_factory=dict)
    _made: dict[str, str] = field(default_factory=dict)  # output -> config hash it was made under

    @property
    def inpainter(self) -> Inpainter:
        if self._inpainter is None:
            try:
                self._inpainter = self.make_inpainter()
            except Exception as e:
                raise SetupError(str(e)) from e
        return self._inpainter

    def record(self, job: Job, status: str, **fields: Any) -> None:
        self.manifest.append({
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "status": status,
            "image": str(job.image), "mask": None if job.mask is None else str(job.mask),
            "config_hash": self.config_hash, "shard": None if self.shard is None else str(self.shard),
            "host": socket.gethostname(), "pid": os.getpid(), **fields,
        })

    def inpaint(self, inputs: Inputs, job: Job) -> tuple[Refinement, Attempts, list[str]]:
        """The inpainted image; an empty mask gives the image itself (no network)."""
        notes: list[str] = []
        fraction = inputs.hole_fraction
        if fraction == 0:
            notes.append("empty mask: the output is the image")
            return Refinement(image=inputs.image), Attempts(), notes
        if fraction == 1:
            notes.append("the mask covers the whole image: nothing is known, the output is the model's guess")
            log.warning("%s: %s", job.name, notes[-1])
        try:
            refinement, attempts = inpaint_with_retries(self.inpainter, inputs, job.name)
        except InputError:
            raise
        except ValueError as e:  # the pipeline's word on this image, e.g. too small to pad
            raise InputError(f"{job.image}: {e}") from e
        return refinement, attempts, notes

    def __post_init__(self) -> None:
        self.overwrite = overwrite_mode(self.overwrite)

    def existing(self, out: Path, summary: Summary) -> Redo | None:
        """What to do with an output that exists: None = keep it (skip the job), else why and
        how it is made again."""
        if self.overwrite is True:
            return Redo("overwrite=true")
        if self.overwrite == "never":
            return None
        made_under = self._made.get(str(out.relative_to(self.outdir)))
        if made_under is None:
            summary.unrecorded.append(out)
            return None
        if made_under != self.config_hash:
            return Redo(f"made under config {made_under}, this run is {self.config_hash}", replaced=made_under)
        if not output_is_intact(out):
            return Redo("the existing output is damaged")
        return None

    def write(self, out: Path, image, bits: int) -> None:
        try:
            write_result(out, image, bits=bits, quality=self.out_quality)
        except OSError as e:
            raise InputError(f"{out}: cannot write the output ({describe_os_error(e)})") from e

    def process(self, job: Job, summary: Summary) -> None:
        """One job, start to finish. Any error with this file is recorded as its failure and the
        batch goes on; only SetupError (no inpainter at all) and interrupts (Ctrl-C) propagate."""
        start = time.perf_counter()
        try:
            if job.problem:
                raise InputError(job.problem)
            out = job.output(self.outdir, self.out_ext)
            exists = out.exists()
            redo = self.existing(out, summary) if exists else None
            if exists and redo is None:
                summary.skipped.append(out)
                return
            replaced = {"replaced_config_hash": redo.replaced} if redo and redo.replaced else {}
            for stale in self._stale.pop(out, []):  # left by a killed run of this very job
                stale.unlink(missing_ok=True)
            inputs = load_inputs(job, self.rule)
            read_s = time.perf_counter() - start
            refinement, attempts, notes = self.inpaint(inputs, job)
            inpaint_s = time.perf_counter() - start - read_s
            notes = inputs.notes + notes
            with deferred_interrupts():  # an output and its manifest line are written together
                self.write(out, refinement.image, inputs.bits)
                total = time.perf_counter() - start
                (summary.redone if replaced else summary.done).append(out)
                summary.notes += [(job.name, n) for n in notes]
                losses = [loss for scale in refinement.losses for loss in scale]
                self.record(job, "done", output=str(out.relative_to(self.outdir)), **replaced,
                            size=list(inputs.image.shape[-2:]), bits=inputs.bits,
                            hole_fraction=round(inputs.hole_fraction, 6),
                            scales=[list(s.shape[-2:]) for s in refinement.scales],
                            iterations=[len(scale) for scale in refinement.losses],  # forwards optimised per scale
                            final_loss=finite_or_none(losses[-1]) if losses else None,
                            attempts=max(attempts.count, 1), retries=attempts.changes, notes=notes,
                            seconds={"read": round(read_s, 3), "inpaint": round(inpaint_s, 3),
                                     "write": round(total - read_s - inpaint_s, 3), "total": round(total, 3)})
        except SetupError:
            raise
        except Exception as e:  # noqa: BLE001 - one file never stops the batch
            reason = str(e) if isinstance(e, InputError) else f"{job.name}: {type(e).__name__}: {e}"
            log.error("%s", reason)
            if not isinstance(e, InputError):
                log.debug("traceback of the error on %s", job.name, exc_info=True)
            summary.failed.append((job.name, reason))
            self.record(job, "failed", error=reason, seconds={"total": round(time.perf_counter() - start, 3)})
            return
        finally:
            self.on_image_end()
        log.info("%s -> %s (%.1f s)%s%s", job.name, out, total, f"; redone: {redo.reason}" if redo else "",
                 "".join(f"; {n}" for n in notes))

    def run(self, jobs: Sequence[Job], resume: bool = True) -> Summary:
        """Every job in order; prints the summary even when interrupted (Ctrl-C, SIGTERM).
        `resume`: look under outdir for what earlier runs left (temporaries, the manifest); off
        for one image, whose outdir is merely the folder its output goes to."""
        summary = Summary()
        self._stale = stale_temporaries(self.outdir) if resume and self.outdir.is_dir() else {}
        self._made = output_hashes(self.outdir / MANIFEST) if resume else {}
        try:
            with logging_redirect_tqdm():
                for job in tqdm(jobs, desc="images", disable=not self.progress, position=0, dynamic_ncols=True):
                    self.process(job, summary)
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM; a SetupError is no interruption
            log.warning("interrupted; so far: %s", summary.report())
            raise
        if summary.unrecorded:
            summary.notes.append((self.outdir, f"{len(summary.unrecorded)} existing output(s) have no line in "
                                  f"{MANIFEST} (made by an older run?) and were kept; overwrite=true redoes them"))
        if self.report:
            log.info("%s", summary.report())
            where = results_line(self.outdir, summary, jobs)
            if where:
                log.info("%s", where)
        return summary


__all__ = [
    "Attempts", "Batch", "BatchFailed", "SetupError", "deferred_interrupts", "MANIFEST", "Manifest", "Retry", "Shard", "Summary", "config_hash",
    "halved_px_budget", "inpaint_with_retries", "is_out_of_memory", "oom_retry_plan", "output_hashes", "overwrite_mode",
    "read_manifest",
]
