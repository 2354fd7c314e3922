"""Batch processing: one folder of jobs, never stopped by one file, resumable, shardable.

- `Summary`: what was done, skipped and failed (with reasons), printed at the end.
- `Manifest`: one JSON line per processed file in `outdir/manifest.jsonl`, each line a single
  `O_APPEND` write, so shard processes on one machine can share the file. A `done` line records
  what made its output (`lama_refine.batch.provenance`): the photo's and mask's digests, the model's,
  the config hash and the results version; a rerun keeps the output only if all are unchanged.
- claims (`lama_refine.batch.claims`): runs sharing an outdir do each job once.
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
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Sequence, cast

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from lama_refine._compat import as_first_written
from lama_refine.batch.claims import CLAIMS, Claims
from lama_refine.batch.provenance import DEVICE_KEYS, INPUT_KEYS, RESULT_NEUTRAL_KEYS, RESULTS_VERSION, Stamp
from lama_refine.errors import describe_os_error
from lama_refine.io import (
    InputError,
    Inputs,
    Job,
    MaskRule,
    load_inputs,
    output_is_intact,
    stale_temporaries,
    write_result,
)
from lama_refine.parts.refine import Refinement
from lama_refine.perf.switches import release_memory
from lama_refine.pipeline import Inpainter

log = logging.getLogger("lama_refine")

MANIFEST = "manifest.jsonl"
# What the config hash left out before manifests recorded the inputs' digests (`legacy_config_hash`,
# for judging such lines); today's rules are lama_refine.batch.provenance's.
LEGACY_UNHASHED_KEYS = (
    "indir",
    "outdir",
    "maskdir",
    "devices",
    "overwrite",
    "progress",
    "shard",
    "manifest",
    "image",
    "out",
    "debug",
    "refiner.gpu_ids",
    "mask.file",
    "trace",  # added later, and writes beside the outputs without changing them
)
# Why an existing output is made again, in the summary's order: (reason, its words there).
REDO_REASONS = (
    ("photo", "photo changed"),
    ("mask", "mask changed"),
    ("model", "model changed"),
    ("settings", "settings changed"),
    ("version", "results version changed"),
)


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[tuple[Path, str]] = field(default_factory=list)  # done, but worth a look (empty mask, ...)
    redone: list[Path] = field(default_factory=list)  # existed, made from other inputs or settings: made again
    redone_because: Counter = field(default_factory=Counter)  # REDO_REASONS -> jobs (one job may have several)
    claimed: list[Path] = field(default_factory=list)  # another live run is doing these
    unrecorded: list[Path] = field(default_factory=list)  # skipped, with no manifest line to judge them by
    legacy: list[Path] = field(default_factory=list)  # judged by a line without digests (an older version's)

    def report(self) -> str:
        redone = ""
        if self.redone:
            reasons = [
                f"{words}: {self.redone_because[key]}"
                for key, words in REDO_REASONS
                if key != "version" or self.redone_because[key]
            ]
            redone = f"{len(self.redone)} redone ({', '.join(reasons)}), "
        claimed = f"{len(self.claimed)} claimed by another run, " if self.claimed else ""
        lines = [
            f"{len(self.done)} done, {redone}{len(self.skipped)} skipped (output exists), {claimed}"
            f"{len(self.failed)} failed"
        ]
        lines += [f"  failed: {reason}" for _, reason in self.failed]
        lines += [f"  note: {path}: {note}" for path, note in self.notes]
        return "\n".join(lines)


def results_line(outdir: Path, summary: Summary, jobs: Sequence[Job]) -> str | None:
    """The run's last line: where the results are, one example path, and what names them."""
    outputs = summary.done + summary.redone + summary.skipped
    if not outputs:
        return None
    after_mask = any(j.mask is not None and j.relative.stem == j.mask.stem != j.image.stem for j in jobs)
    naming = (
        "named after their masks, as LaMa names them; indir=photos maskdir=masks names them after the photos"
        if after_mask
        else "named after the photos"
    )
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
# Values are as 0.1 wrote them: the hash sees every `_target_` under its first path (`_first_written`).
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


def device_kinds(cfg: DictConfig) -> list[str]:
    """The kinds of device `cfg` runs on (`["cuda"]`, `["cpu"]`): CPU and GPU round differently,
    which GPU of a kind does not matter (lama_refine.batch.provenance). Unset: where it would run."""
    from lama_refine.config import parse_gpu_ids

    gpu_ids = OmegaConf.select(cfg, "refiner.gpu_ids", default=None)
    if gpu_ids is not None:
        devices = [str(d) for d in parse_gpu_ids(gpu_ids)]
    else:
        devices = [str(d) for d in (cfg.get("devices") or [])]
    if not devices:
        devices = ["cuda" if torch.cuda.is_available() else "cpu"]
    return sorted({d.split(":")[0] for d in devices})


def config_hash(cfg: DictConfig) -> str:
    """12 hex digits of the resolved config, without the keys that do not change results
    (`RESULT_NEUTRAL_KEYS`) and those naming inputs (`INPUT_KEYS`: judged by their digests),
    and with the devices as their kind: two outputs with one hash, from the same inputs, were
    made the same way."""
    data = _hashed_settings(cfg, RESULT_NEUTRAL_KEYS + INPUT_KEYS + DEVICE_KEYS)
    data["devices"] = device_kinds(cfg)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def legacy_config_hash(cfg: DictConfig) -> str:
    """The config hash manifests recorded before they had digests (`model.path` hashed as a
    string, the devices left out): lines without `results_version` are judged by it."""
    data = _hashed_settings(cfg, LEGACY_UNHASHED_KEYS)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _first_written(value: Any) -> Any:
    """Every `_target_` (any string) as 0.1 wrote it (`_compat.as_first_written`): the package's move
    must not change the hash of the settings that made an output."""
    if isinstance(value, dict):
        return {k: _first_written(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_first_written(v) for v in value]
    return as_first_written(value) if isinstance(value, str) else value


def _hashed_settings(cfg: DictConfig, left_out: Sequence[str]) -> dict[str, Any]:
    # a DictConfig's container is a dict, keyed by the config's (string) names
    data = cast("dict[str, Any]", _first_written(OmegaConf.to_container(cfg, resolve=True)))
    for key in left_out:
        parent, name = _parent(data, key)
        parent.pop(name, None)
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
    return data


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


# What a rerun needs of a `done` line (the rest stays on disk).
STAMP_FIELDS = ("image_stamp", "mask_stamp")
MADE_FIELDS = ("config_hash", "results_version", "model_sha256", *STAMP_FIELDS)
# A rerun that re-hashed a touched photo or mask and found the same bytes appends a line with this
# status and the new stamps, so that later reruns trust the new mtime instead of hashing again.
VERIFIED = "verified"


class MadeRecords:
    """The last `done` line of each output, by its path relative to outdir, read from a manifest
    file and kept up to date with what other runs append while this one works (`refresh` reads
    only the new bytes). A line that cannot be read is passed over."""

    def __init__(self, path: Path | None):
        self.path = path
        self.offset = 0
        self.made: dict[str, dict[str, Any]] = {}
        self.refresh()

    def refresh(self) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # a line still being appended is read next time
        self.offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or not record.get("output"):
                continue
            if record.get("status") == "done":
                self.made[str(record["output"])] = {k: record[k] for k in MADE_FIELDS if k in record}
            elif record.get("status") == VERIFIED and str(record["output"]) in self.made:
                self.made[str(record["output"])].update({k: record[k] for k in STAMP_FIELDS if k in record})

    def get(self, output: str) -> dict[str, Any] | None:
        return self.made.get(output)


def output_hashes(path: Path) -> dict[str, str]:
    """The config hash each output was last made under, by its path relative to outdir."""
    return {output: str(line.get("config_hash")) for output, line in MadeRecords(path).made.items()}


OVERWRITE_MODES = (False, True, "never")
"""`overwrite`: false redoes an output only if something that made it changed (photo, mask, model,
settings, results version) or it is damaged; true redoes every output; never keeps every existing
output, whatever made it."""


def overwrite_mode(value: Any) -> bool | str:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if value not in OVERWRITE_MODES or (isinstance(value, int) and not isinstance(value, bool)):
        raise ValueError(
            f"overwrite={value!r}: expected false (redo outputs whose inputs or config changed), "
            "true (redo all) or never (keep every existing output)"
        )
    return value


@dataclass(frozen=True)
class Redo:
    """Why an existing output is made again; `because`: the REDO_REASONS keys that apply (the
    summary counts these jobs as "redone"; none for a damaged output, made again as "done");
    `replaced`: the config hash it was made under, when the settings changed."""

    reason: str
    replaced: str | None = None
    because: tuple[str, ...] = ()


BUSY = Redo("another run holds its claim")  # `Batch.existing`: counted as claimed, left alone


def stamp_or_none(path: Path | None) -> dict[str, Any] | None:
    """A file's Stamp for its manifest line; None where it cannot be read (reading it fails next,
    with its own message)."""
    try:
        return None if path is None else Stamp.of(path).as_dict()
    except OSError:
        return None


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
        return list(jobs[self.index :: self.count])

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
            log.warning(
                "pyramid %s has no pixel budget (PyramidBuilder.pixel_budget() is None): no retry at a smaller size",
                type(pyramid).__name__,
            )
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


def inpaint_with_retries(
    inpainter: Inpainter,
    inputs: Inputs,
    name: Path,
    plan: Callable[[Inpainter], list[Retry]] = oom_retry_plan,
    before_retry: Callable[[], None] = lambda: None,
) -> tuple[Refinement, Attempts]:
    """Run the inpainter; after an out-of-memory error free memory and go through `plan`, calling
    `before_retry` before each new try (what the failed one reported is void). Raises InputError
    naming the file once the plan is exhausted; other errors propagate."""
    attempts = Attempts()
    retries: list[Retry | None] = [None, *plan(inpainter)]
    for retry in retries:
        with retry(inpainter) if retry else contextlib.nullcontext("first try") as change:
            if change is None:
                continue  # this retry does not apply to this inpainter
            if retry is not None:
                attempts.changes.append(change)
                log.warning("%s: out of memory; retrying with %s", name, change)
                before_retry()
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
    legacy_hash: str = ""  # this config's hash as lines without digests have it (legacy_config_hash)
    model_digest: Callable[[], str] = lambda: ""  # sha256 of the model's files (provenance.model_digest)
    shard: Shard | None = None
    progress: bool = True
    on_image_end: Callable[[], None] = lambda: None  # e.g. close the per-scale progress bar
    on_image_start: Callable[[Job], None] = lambda job: None  # before a job is inpainted (e.g. `trace=`)
    on_image_retry: Callable[[Job], None] = lambda job: None  # before an out-of-memory retry of the job
    report: bool = True  # log the summary at the end (one image says it all in its own line)
    _inpainter: Inpainter | None = None
    _stale: dict[Path, list[Path]] = field(default_factory=dict)
    _made: MadeRecords = field(default_factory=lambda: MadeRecords(None))
    _claims: Claims | None = None
    _rehashed: dict[str, dict[str, Any]] = field(default_factory=dict)  # output -> fresh stamps, same bytes
    _model_sha256: str | None = None

    @property
    def inpainter(self) -> Inpainter:
        if self._inpainter is None:
            try:
                self._inpainter = self.make_inpainter()
            except Exception as e:
                raise SetupError(str(e)) from e
        return self._inpainter

    @property
    def model_sha256(self) -> str:
        """The model's digest, computed once per run and only when needed."""
        if self._model_sha256 is None:
            try:
                self._model_sha256 = self.model_digest()
            except OSError as e:
                raise SetupError(f"cannot read the model to digest it ({describe_os_error(e)})") from e
        return self._model_sha256

    def record(self, job: Job, status: str, **fields: Any) -> None:
        self.manifest.append(
            {
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "status": status,
                "image": str(job.image),
                "mask": None if job.mask is None else str(job.mask),
                "config_hash": self.config_hash,
                "results_version": RESULTS_VERSION,
                "shard": None if self.shard is None else str(self.shard),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                **fields,
            }
        )

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
            refinement, attempts = inpaint_with_retries(
                self.inpainter, inputs, job.name, before_retry=lambda: self.on_image_retry(job)
            )
        except InputError:
            raise
        except ValueError as e:  # the pipeline's word on this image, e.g. too small to pad
            raise InputError(f"{job.image}: {e}") from e
        return refinement, attempts, notes

    def __post_init__(self) -> None:
        self.overwrite = overwrite_mode(self.overwrite)

    def existing(self, out: Path, job: Job, summary: Summary) -> Redo | None:
        """What to do with an output that exists: None = keep it (skip the job), else why and
        how it is made again. The manifest is read again where its line is missing or says redo:
        another run may have just made it."""
        if self.overwrite is True:
            return Redo("overwrite=true")
        if self.overwrite == "never":
            return None
        key = str(out.relative_to(self.outdir))
        verdict = self.judge(self._made.get(key), job)
        if verdict is not None:
            self._made.refresh()
            verdict = self.judge(self._made.get(key), job)
        if verdict == "unrecorded":
            if self._claims is not None and self._claims.path(key).exists():
                return BUSY  # its run has written it and is appending its line
            summary.unrecorded.append(out)
            return None
        if verdict == "legacy":
            summary.legacy.append(out)
            verdict = None
        if verdict is None and not output_is_intact(out):
            return Redo("the existing output is damaged")
        return verdict if isinstance(verdict, Redo) else None

    def judge(self, line: dict[str, Any] | None, job: Job) -> Redo | str | None:
        """An output's manifest line against this run: None (all unchanged), a Redo, "unrecorded"
        (no line: kept) or "legacy" (a line without digests whose config hash matches: kept)."""
        if line is None:
            return "unrecorded"
        made_under = str(line.get("config_hash"))
        if "results_version" not in line:  # before digests: today's config, by the hash of that time
            if made_under != self.legacy_hash:
                return Redo(
                    f"made under config {made_under}, this run is {self.legacy_hash}",
                    replaced=made_under,
                    because=("settings",),
                )
            return "legacy"
        because = []
        if made_under != self.config_hash:
            because.append("settings")
        if line.get("results_version") != RESULTS_VERSION:
            because.append("version")
        if line.get("model_sha256") != self.model_sha256:
            because.append("model")
        fresh: dict[str, Any] = {}
        for field_name, path, reason in (("image_stamp", job.image, "photo"), ("mask_stamp", job.mask, "mask")):
            if path is None:
                continue
            recorded = Stamp.parse(line.get(field_name))
            now = recorded.recheck(path) if recorded is not None else None
            if now is None:
                because.append(reason)
            elif now is not recorded:
                fresh[field_name] = now.as_dict()
        if not because:
            if fresh:
                self._rehashed[str(job.output(self.outdir, self.out_ext).relative_to(self.outdir))] = fresh
            return None
        words = dict(REDO_REASONS)
        return Redo(
            ", ".join(words[b] for b in because),
            replaced=made_under if "settings" in because else None,
            because=tuple(because),
        )

    def write(self, out: Path, image, bits: int) -> None:
        try:
            write_result(out, image, bits=bits, quality=self.out_quality)
        except OSError as e:
            raise InputError(f"{out}: cannot write the output ({describe_os_error(e)})") from e

    def process(self, job: Job, summary: Summary) -> None:
        """One job, start to finish. Any error with this file is recorded as its failure and the
        batch goes on; only SetupError (no inpainter at all) and interrupts (Ctrl-C) propagate."""
        start = time.perf_counter()
        claim: Path | None = None
        try:
            if job.problem:
                raise InputError(job.problem)
            out = job.output(self.outdir, self.out_ext)
            exists = out.exists()
            redo = self.existing(out, job, summary) if exists else None
            if redo is BUSY:
                summary.claimed.append(out)
                return
            if exists and redo is None:
                summary.skipped.append(out)
                rehashed = self._rehashed.pop(str(out.relative_to(self.outdir)), None)
                if rehashed:
                    self.record(job, VERIFIED, output=str(out.relative_to(self.outdir)), **rehashed)
                return
            if self._claims is not None:
                claim = self._claims.acquire(str(out.relative_to(self.outdir)))
                if claim is None:
                    summary.claimed.append(out)
                    log.info("%s: claimed by another run, skipped", job.name)
                    return
                if self.overwrite is not True:  # another run may have made it since we looked
                    exists = out.exists()
                    redo = self.existing(out, job, Summary()) if exists else None
                    if exists and (redo is None or redo is BUSY):  # BUSY: our own claim
                        summary.skipped.append(out)
                        return
            replaced: dict[str, Any] = {"replaced_config_hash": redo.replaced} if redo and redo.replaced else {}
            if redo and redo.because:
                replaced["redone"] = list(redo.because)
            for stale in self._stale.pop(out, []):  # left by a killed run of this very job
                stale.unlink(missing_ok=True)
            # stamped before reading, so that a change while this job runs shows at the next rerun
            stamps = {"image_stamp": stamp_or_none(job.image), "mask_stamp": stamp_or_none(job.mask)}
            inputs = load_inputs(job, self.rule)
            read_s = time.perf_counter() - start
            self.on_image_start(job)
            refinement, attempts, notes = self.inpaint(inputs, job)
            inpaint_s = time.perf_counter() - start - read_s
            notes = inputs.notes + notes
            if claim is not None:
                assert self._claims is not None  # a claim is taken from self._claims
                if not self._claims.owns(claim):
                    summary.claimed.append(out)
                    log.warning(
                        "%s: another run took this job over (its claim looked stale); its output is left to it",
                        job.name,
                    )
                    return
            model_sha256 = self.model_sha256
            with deferred_interrupts():  # an output and its manifest line are written together
                self.write(out, refinement.image, inputs.bits)
                total = time.perf_counter() - start
                if redo and redo.because:
                    summary.redone.append(out)
                    summary.redone_because.update(redo.because)
                else:
                    summary.done.append(out)
                summary.notes += [(job.name, n) for n in notes]
                losses = [loss for scale in refinement.losses for loss in scale]
                self.record(
                    job,
                    "done",
                    output=str(out.relative_to(self.outdir)),
                    **replaced,
                    model_sha256=model_sha256,
                    **stamps,
                    size=list(inputs.image.shape[-2:]),
                    bits=inputs.bits,
                    hole_fraction=round(inputs.hole_fraction, 6),
                    scales=[list(s.shape[-2:]) for s in refinement.scales],
                    iterations=[len(scale) for scale in refinement.losses],  # forwards optimised per scale
                    final_loss=finite_or_none(losses[-1]) if losses else None,
                    attempts=max(attempts.count, 1),
                    retries=attempts.changes,
                    notes=notes,
                    seconds={
                        "read": round(read_s, 3),
                        "inpaint": round(inpaint_s, 3),
                        "write": round(total - read_s - inpaint_s, 3),
                        "total": round(total, 3),
                    },
                )
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
            if claim is not None:
                assert self._claims is not None  # a claim is taken from self._claims
                self._claims.release(claim)
            self.on_image_end()
        log.info(
            "%s -> %s (%.1f s)%s%s",
            job.name,
            out,
            total,
            f"; redone: {redo.reason}" if redo else "",
            "".join(f"; {n}" for n in notes),
        )

    def run(self, jobs: Sequence[Job], resume: bool = True) -> Summary:
        """Every job in order; prints the summary even when interrupted (Ctrl-C, SIGTERM).
        `resume`: look under outdir for what earlier runs left (temporaries, the manifest); off
        for one image, whose outdir is merely the folder its output goes to."""
        summary = Summary()
        self._stale = stale_temporaries(self.outdir) if resume and self.outdir.is_dir() else {}
        self._made = MadeRecords(self.outdir / MANIFEST if resume else None)
        claims = Claims(self.outdir / CLAIMS) if resume else None
        try:
            with logging_redirect_tqdm(), claims if claims is not None else contextlib.nullcontext():
                self._claims = claims
                for job in tqdm(jobs, desc="images", disable=not self.progress, position=0, dynamic_ncols=True):
                    self.process(job, summary)
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM; a SetupError is no interruption
            log.warning("interrupted; so far: %s", summary.report())
            raise
        finally:
            self._claims = None
        if summary.unrecorded:
            summary.notes.append(
                (
                    self.outdir,
                    f"{len(summary.unrecorded)} existing output(s) have no line in "
                    f"{MANIFEST} (made by an older run?) and were kept; overwrite=true redoes them",
                )
            )
        if summary.legacy:
            summary.notes.append(
                (
                    self.outdir,
                    f"{len(summary.legacy)} existing output(s) were judged by manifest "
                    "lines of an older lama-refine, which record no photo, mask or model digests: "
                    "kept where their settings match; overwrite=true redoes them",
                )
            )
        if self.report:
            log.info("%s", summary.report())
            where = results_line(self.outdir, summary, jobs)
            if where:
                log.info("%s", where)
        return summary


__all__ = [
    "Attempts",
    "Batch",
    "BatchFailed",
    "SetupError",
    "deferred_interrupts",
    "MANIFEST",
    "Manifest",
    "Retry",
    "Shard",
    "Summary",
    "config_hash",
    "halved_px_budget",
    "inpaint_with_retries",
    "is_out_of_memory",
    "legacy_config_hash",
    "oom_retry_plan",
    "output_hashes",
    "overwrite_mode",
    "read_manifest",
]
