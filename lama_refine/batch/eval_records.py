"""lama-refine-eval's per-image results, appended as they are made, so that a killed evaluation
resumes where it stopped and a changed model, photo, mask or setting measures again.

`<result dir>/per_image.jsonl` gets one JSON line per measured image: the sample's name, its row
of metrics, and what made it, by the same rules as `lama-refine`'s manifest
(`lama_refine.batch.provenance`): the photo's and mask's digests (a generated mask: its family and
seed), the model's digest, the settings' hash, the results version, and the devices. The devices
count in full here, not by their kind as for an output: time and memory are measured on them.
A rerun of the same command reuses every line that still matches and measures the rest. In a
sweep, which Hydra starts in a new folder each time, each setting also reads its namesakes in the
earlier sweeps beside it, copying what it reuses (the line, and its pictures) into its own folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from lama_refine.batch.provenance import RESULTS_VERSION, Stamp

log = logging.getLogger("lama_refine.app.evaluate")

PER_IMAGE = "per_image.jsonl"
# Evaluation keys that change no image's measurement: where the inputs and results are, how many
# images and pictures there are (the settings' hash leaves them out).
EVAL_NEUTRAL_KEYS = ("gt_dir", "mask_dir", "max_images", "visuals", "save_outputs")


def settings_hash(cfg: DictConfig, devices: Sequence[Any]) -> str:
    """`lama-refine`'s config hash of the evaluation's config, without `EVAL_NEUTRAL_KEYS`, with
    the devices the measurements ran on (their full list)."""
    from lama_refine.batch.runner import config_hash

    cfg = cfg.copy()
    with open_dict(cfg):
        for key in EVAL_NEUTRAL_KEYS:
            cfg.pop(key, None)
    devices_part = ",".join(str(d) for d in devices)
    return hashlib.sha256(f"{config_hash(cfg)}|{devices_part}".encode()).hexdigest()[:12]


class ImageRecords:
    """The per-image lines of one result folder, and what this run needs them to match."""

    def __init__(self, path: Path, settings: str, model_digest: Callable[[], str], earlier: Sequence[Path] = ()):
        """`earlier`: other folders' per-image files (an earlier sweep's same setting), read too;
        a line of `path` wins over theirs."""
        self.path = path
        self.settings = settings
        self._model_digest = model_digest
        self._model: str | None = None
        self.lines: dict[str, dict[str, Any]] = {}  # sample name -> its last line
        self.folder: dict[str, Path] = {}  # sample name -> the folder whose file holds that line
        for source in [*earlier, path]:
            for record in read_records(source):
                self.lines[record["image"]] = record
                self.folder[record["image"]] = source.parent

    @property
    def model(self) -> str:
        if self._model is None:
            self._model = self._model_digest()
        return self._model

    @staticmethod
    def inputs(sample) -> dict[str, Any]:
        """What the sample's pixels come from, stamped before they are read."""
        mask = Stamp.of(sample.mask).as_dict() if sample.mask is not None else {"generated_seed": sample.seed}
        return {"image": Stamp.of(sample.image).as_dict(), "mask": mask}

    def reusable(self, sample, metrics: Sequence[str]) -> dict[str, Any] | None:
        """The row measured earlier for this sample where everything that made it is unchanged
        and it has every metric this version reports, else None."""
        line = self.lines.get(sample.name)
        if line is None or line.get("results_version") != RESULTS_VERSION or line.get("settings") != self.settings:
            return None
        row = line.get("row")
        if not isinstance(row, dict) or any(m not in row for m in metrics):
            return None
        made = line.get("inputs") or {}
        image = Stamp.parse(made.get("image"))
        if image is None or not image.still_matches(sample.image):
            return None
        if sample.mask is None:
            if (made.get("mask") or {}).get("generated_seed") != sample.seed:
                return None
        else:
            mask = Stamp.parse(made.get("mask"))
            if mask is None or not mask.still_matches(sample.mask):
                return None
        if line.get("model_sha256") != self.model:
            return None
        return row

    def adopt(self, sample) -> Path | None:
        """Copy the sample's line, read from another folder's file, into this folder's; returns
        that folder (whose pictures the caller may copy too), or None if the line is this folder's."""
        source = self.folder.get(sample.name)
        if source is None or source == self.path.parent:
            return None
        self._write(self.lines[sample.name])
        self.folder[sample.name] = self.path.parent
        return source

    def append(self, sample, row: dict[str, Any], inputs: dict[str, Any]) -> None:
        """One line, written as soon as the image is measured. PSNR may be infinite: written as
        JSON's `Infinity`, which Python reads back."""
        record = {
            "image": sample.name,
            "row": row,
            "inputs": inputs,
            "model_sha256": self.model,
            "settings": self.settings,
            "results_version": RESULTS_VERSION,
        }
        self.lines[sample.name] = record
        self.folder[sample.name] = self.path.parent
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        """One `os.write` with O_APPEND, as the manifest's."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(record, default=str) + "\n").encode())
            finally:
                os.close(fd)
        except OSError as e:  # the measurement is in this run's tables; only resuming loses it
            log.error("%s: cannot append the per-image result (%s)", self.path, e)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The per-image lines of one file, oldest first; a line cut by a kill is left out (measured again)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("image"), str):
            records.append(record)
    return records


def earlier_sweeps(result_dir: Path) -> list[Path]:
    """The per-image files of the same setting in the other sweeps beside this one
    (`outdir/sweeps/<time>/<setting>/`), oldest first: rerunning a killed sweep's command, which
    starts a new sweep folder, measures only what they lack."""
    sweeps = result_dir.parent.parent
    found = [p / result_dir.name / PER_IMAGE for p in sweeps.iterdir() if p.is_dir()] if sweeps.is_dir() else []
    return sorted((f for f in found if f.parent != result_dir and f.is_file()), key=lambda f: f.stat().st_mtime)


__all__ = ["EVAL_NEUTRAL_KEYS", "ImageRecords", "PER_IMAGE", "earlier_sweeps", "read_records", "settings_hash"]
