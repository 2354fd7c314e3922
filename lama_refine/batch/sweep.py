"""Where a job of a `--multirun` sweep writes: one folder per combination of swept settings.

`lama-refine` and `lama-refine-eval` both name a sweep job's folder after the keys the command
line sweeps (`refine=true,false` -> `refine=False/`), leaving out the keys that cannot change an
output (`RESULT_NEUTRAL_KEYS`): jobs that differ only in those (`shard=0/4,...,3/4`) share one
folder, and jobs that differ in anything else never overwrite or skip each other's outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from lama_refine.batch.provenance import RESULT_NEUTRAL_KEYS  # the one list, shared with the config hash


def in_sweep() -> bool:
    """True inside a job of a `--multirun` sweep."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def swept_keys(sweep_dir: Path) -> list[str]:
    """The keys a --multirun command line sweeps (`refine=true,false` -> `refine`), read from the
    `multirun.yaml` Hydra writes to the sweep folder before it launches the jobs."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        return []
    overrides = OmegaConf.load(saved).hydra.overrides.task
    return [
        o.get_key_element() for o in OverridesParser.create().parse_overrides(list(overrides)) if o.is_sweep_override()
    ]


def sweep_setting() -> str:
    """This job's swept settings that may change an output (`refine=False,pyramid=fixed`), '' outside
    a sweep or when only result-neutral keys are swept. Path separators in values become `_`."""
    if not in_sweep():
        return ""
    hc = HydraConfig.get()
    swept = [k for k in swept_keys(Path(hc.sweep.dir)) if k not in RESULT_NEUTRAL_KEYS]
    own = dict(o.split("=", 1) for o in hc.overrides.task if "=" in o)
    return ",".join(f"{k}={own[k]}".replace(os.sep, "_") for k in swept if k in own)


def sweep_job_dir(base: Path, unnamed: str | None = None) -> Path:
    """`base / <this job's setting>` in a sweep (`base / unnamed` where no setting is swept and
    `unnamed` is given), else `base`."""
    setting = sweep_setting() or (unnamed if in_sweep() else None)
    return base / setting if setting else base


__all__ = ["RESULT_NEUTRAL_KEYS", "in_sweep", "sweep_job_dir", "sweep_setting", "swept_keys"]
