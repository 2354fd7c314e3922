"""lama-refine-eval's per-image results, appended as they are made, so that a killed evaluation
resumes where it stopped and a changed model, photo, mask or setting measures again.

`<result dir>/per_image.jsonl` gets one JSON line per measured image: the sample's name, its row
of metrics, and what made it, by the same rules as `lama-refine`'s manifest
(`lama_refine.batch.provenance`): the photo's and mask's digests (a generated mask: its family and
seed), the model's digest, the settings' hash, the results version, and the devices. The devices
count in full here, not by their kind as for an output: time and memory are measured on them.
A rerun of the same command reuses every line that still matches and measures the rest.
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

    def __init__(self, path: Path, settings: str, model_digest: Callable[[], str]):
        self.path = path
        self.settings = settings
        self._model_digest = model_digest
        self._model: str | None = None
        self.lines: dict[str, dict[str, Any]] = {}  # sample name -> its last line
        try:
            text = path.read_text(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by a kill: measured again
                continue
            if isinstance(record, dict) and isinstance(record.get("image"), str):
                self.lines[record["image"]] = record

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

    def append(self, sample, row: dict[str, Any], inputs: dict[str, Any]) -> None:
        """One line, one `os.write` with O_APPEND (as the manifest's), written as soon as the image
        is measured. PSNR may be infinite: written as JSON's `Infinity`, which Python reads back."""
        record = {
            "image": sample.name,
            "row": row,
            "inputs": inputs,
            "model_sha256": self.model,
            "settings": self.settings,
            "results_version": RESULTS_VERSION,
        }
        self.lines[sample.name] = record
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(record, default=str) + "\n").encode())
            finally:
                os.close(fd)
        except OSError as e:  # the measurement is in this run's tables; only resuming loses it
            log.error("%s: cannot append the per-image result (%s)", self.path, e)


__all__ = ["EVAL_NEUTRAL_KEYS", "ImageRecords", "PER_IMAGE", "settings_hash"]
