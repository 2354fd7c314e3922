"""What made an output: the one owner of the rules a rerun uses to keep or redo it.

An output is kept only if everything that made it is unchanged (README "Batch processing"):

- the photo's and the mask's bytes (`Stamp`: sha256 plus the size and mtime it was hashed at; a
  file whose size and mtime still match is trusted without re-reading it, as make and git do);
- the model's weights (`model_digest`: the weights file and the architecture yaml the loader
  reads, not their path; cached by (path, size, mtime) under `$LAMA_REFINE_HOME`);
- the settings that can change an output (`batch.config_hash`: the config without the keys
  below);
- `RESULTS_VERSION`.

Keys that do not change an output (`RESULT_NEUTRAL_KEYS`) are left out of the config hash and of
a --multirun job's folder name (`lama_refine.batch.sweep`); keys naming inputs (`INPUT_KEYS`) are left
out of the hash only, their files being judged by digests.

`devices` does change an output, by its kind only (`DEVICE_KEYS`, hashed as `["cpu"]` or
`["cuda"]`): CPU and GPU kernels (convolutions, FFTs, reductions) add in other orders, so the
same job gives outputs that differ by float rounding, and "kept only if everything that made it
is unchanged" has to count that. Which GPUs, and how many, do not count: the same kernels run on
any of them, a requeued shard may land on another GPU and `shard=i/n` without `devices` gives
each shard its own (`Shard.devices`); hashing the list would redo finished work for nothing.
Not counted either, as the hash cannot see them: the GPU model and the torch version (their
rounding differences are of the same size; `overwrite=true` redoes a folder after such a change).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("lama_refine")

# The results version: bump it by hand in the commit that changes the numbers of any output made
# with unchanged settings (a fix in a part, another rounding), so that reruns redo the outputs
# made before it. Changelog:
#   1  first recorded (manifests before it have no `results_version`).
RESULTS_VERSION = 1

# Keys no value of which can change an output: where outputs go, whether existing ones are kept,
# what is shown or logged, which share of the jobs runs. Not here: anything that picks the model,
# the inputs, the method, or the devices (see the module docstring).
RESULT_NEUTRAL_KEYS = ("outdir", "out", "overwrite", "progress", "shard", "manifest", "debug", "trace")
# Where the network runs (`devices`, and LaMa's spelling of it): hashed as the kinds of device.
DEVICE_KEYS = ("devices", "refiner.gpu_ids")
# Keys that name inputs: an output depends on the bytes they point at (judged by digests), not on
# the names, so they are left out of the config hash too (they do change a sweep job's folder).
INPUT_KEYS = ("indir", "maskdir", "image", "mask.file", "model.path")

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Stamp:
    """A file's digest and the size and mtime it had when hashed."""

    sha256: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Stamp:
        before = os.stat(path)
        return cls(file_sha256(path), before.st_size, before.st_mtime_ns)

    @classmethod
    def parse(cls, data: Any) -> Stamp | None:
        try:
            return cls(str(data["sha256"]), int(data["size"]), int(data["mtime_ns"]))
        except (KeyError, TypeError, ValueError):
            return None

    def as_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "mtime_ns": self.mtime_ns}

    def recheck(self, path: Path) -> Stamp | None:
        """`path`'s stamp if it still has these bytes, else None: this one, trusted without reading,
        where its size and mtime are the recorded ones; else a fresh one if re-hashing finds the
        same bytes (a file touched or copied keeps its output)."""
        try:
            now = os.stat(path)
            if (now.st_size, now.st_mtime_ns) == (self.size, self.mtime_ns):
                return self
            if now.st_size != self.size:
                return None
            fresh = Stamp.of(path)
        except OSError:
            return None
        return fresh if fresh.sha256 == self.sha256 else None

    def still_matches(self, path: Path) -> bool:
        return self.recheck(path) is not None


# --- the model -----------------------------------------------------------------------------------

DIGEST_CACHE = "digests.json"


def model_files(path: Path, checkpoint: str = "best.ckpt") -> list[Path]:
    """The files whose bytes make the model `path` names: the weights file (an experiment
    folder's `models/<checkpoint>`) and the architecture yaml the loader would read beside it."""
    from lama_refine.models.loading import _config_yaml_candidates

    weights = path / "models" / checkpoint if path.is_dir() else path
    files = [weights]
    yaml = next((p for p in _config_yaml_candidates(weights) if p.is_file()), None)
    if yaml is not None:
        files.append(yaml)
    return files


class DigestCache:
    """sha256 of files by (absolute path, size, mtime), in one JSON file under
    `$LAMA_REFINE_HOME`, so a model of gigabytes is hashed once, not once per run.

    Written atomically (a temporary file renamed into place); several writers at once may each
    drop the other's new entries, which costs a re-hash, never a wrong digest. A file that cannot
    be read or parsed is treated as empty; one that cannot be written is left alone."""

    def __init__(self, path: Path | None):
        self.path = path

    def _load(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def digest(self, file: Path) -> str:
        file = file.resolve()
        st = os.stat(file)
        key = str(file)
        entry = self._load().get(key)
        if (
            isinstance(entry, dict)
            and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns
            and isinstance(entry.get("sha256"), str)
        ):
            return entry["sha256"]
        digest = file_sha256(file)
        self._store(key, {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
        return digest

    def _store(self, key: str, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = self._load()
            data[key] = entry
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(data, f)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:  # a read-only home costs a re-hash next run, nothing else
            log.debug("cannot write the digest cache %s (%s)", self.path, e)


def default_cache() -> DigestCache:
    from lama_refine.models.zoo import home

    return DigestCache(home() / DIGEST_CACHE)


def model_digest(path: Path, checkpoint: str = "best.ckpt", cache: DigestCache | None = None) -> str:
    """One sha256 over the model's files' digests (`model_files`), independent of where they lie."""
    cache = cache if cache is not None else default_cache()
    files = model_files(Path(path), checkpoint)
    parts = [f"{'weights' if i == 0 else 'architecture'}:{cache.digest(f)}" for i, f in enumerate(files)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def config_model_digest(cfg) -> str:
    """The digest of the model the config's `model` section names (a generator of your own
    without `model.path` has no weights file: its class and arguments are in the config hash)."""
    from lama_refine.config import model_path

    if cfg.model.get("_target_") and not cfg.model.get("path"):
        return "no weights file"
    return model_digest(model_path(cfg.model), str(cfg.model.get("checkpoint") or "best.ckpt"))


__all__ = [
    "DEVICE_KEYS",
    "DigestCache",
    "INPUT_KEYS",
    "RESULTS_VERSION",
    "RESULT_NEUTRAL_KEYS",
    "Stamp",
    "config_model_digest",
    "default_cache",
    "file_sha256",
    "model_digest",
    "model_files",
]
