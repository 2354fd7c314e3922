"""SLURM sweeps (`hydra/launcher=slurm_shards`): what Hydra's submitit launcher leaves unsaid.

Hydra's `submitit_slurm` launcher submits one job array and then waits for each job's result in
turn, following the jobs through `sacct`. Two ways this goes wrong on a real cluster:
- without accounting (`sacct` says "accounting storage is disabled", or cannot reach slurmdbd) a
  job that died without a result stays UNKNOWN and the sweep waits forever. `check_accounting`
  asks `sacct` once before anything is submitted;
- a job cancelled (`scancel`), killed or lost with its node ends the sweep with submitit's
  traceback naming the array job (`7_1`), not the shard, and the other shards' results are never
  looked at. `collect` waits for every job, then names each shard that ended without a result.

`hydra_plugins/lama_refine_launcher` holds the launcher class that uses both (Hydra takes
launchers from the `hydra_plugins` package only); `register_launcher` makes it known to Hydra.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import Any

from hydra.errors import CompactHydraException


class ShardsFailed(CompactHydraException):
    """Jobs of a sweep that ended without a result: printed as its message alone, exit status 1."""


def check_accounting(timeout: float = 30) -> None:
    """Raise ShardsFailed unless `sacct` answers: submitit reads every job's state from it."""
    try:
        proc = subprocess.run(
            ["sacct", "--noheader", "--allocations", "--jobs=1", "--format=JobID"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except FileNotFoundError:
        raise ShardsFailed(
            "hydra/launcher=slurm_shards: sacct is not installed here; the sweep follows its jobs "
            "through sacct, so submit from a machine with SLURM's client commands"
        ) from None
    except subprocess.TimeoutExpired:
        proc = subprocess.CompletedProcess([], 1, "", f"no answer within {timeout:.0f} s")
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise ShardsFailed(
            f"hydra/launcher=slurm_shards: sacct does not answer ({said[-1] if said else f'exit {proc.returncode}'}). "
            "The sweep follows its jobs through SLURM's accounting: without it a job that dies without a result "
            "is never seen to end and the sweep waits forever. Nothing was submitted; ask your cluster's "
            "admins for accounting (slurmdbd), or run the shards as separate jobs (shard=i/n each)"
        )


def own_allocation() -> bool:
    """True inside a job that a SLURM launcher submitted for one shard: SLURM made the job's own
    GPUs (`gpus_per_node`) visible to it, so the shard takes them all instead of its share of a
    machine's GPUs (`Shard.devices`, for shards that share one machine). submitit marks its SLURM
    jobs with SUBMITIT_EXECUTOR=slurm in the job script."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


def register_launcher() -> None:
    """Register `slurm_shards`'s launcher with Hydra. Hydra's plugin scan walks the folders of the
    `hydra_plugins` namespace and misses a module that an editable install serves through an
    import hook (`pip install -e .`, run from another folder); importing it always works."""
    try:
        from hydra_plugins.lama_refine_launcher.slurm_shards import ShardsSlurmLauncher
    except ImportError:
        return
    if ShardsSlurmLauncher is not None:  # None without the `slurm` extra
        from hydra.core.plugins import Plugins

        Plugins.instance().register(ShardsSlurmLauncher)


def shard_name(overrides: Sequence[str]) -> str:
    """`shard=1/4` from a job's overrides (all of them where no shard is swept)."""
    shards = [o for o in overrides if o.startswith("shard=")]
    return shards[0] if shards else " ".join(overrides) or "the job"


def collect(jobs: Sequence[Any], job_overrides: Sequence[Sequence[str]]) -> list[Any]:
    """Every job's result (submitit jobs, in the order of `job_overrides`), after all have ended.
    Raises ShardsFailed naming each shard whose job ended without one, with its state and log."""
    from submitit.core.utils import UncompletedJobError

    results, failed = [], []
    for job, overrides in zip(jobs, job_overrides, strict=False):
        try:
            results.append(job.results()[0])
        except UncompletedJobError:
            failed.append(
                f"  {shard_name(overrides)} (SLURM job {job.job_id}): {job.state}, no result; "
                f"its log: {job.paths.stderr}"
            )
    if failed:
        raise ShardsFailed(
            f"{len(failed)} of {len(jobs)} SLURM jobs ended without a result:\n"
            + "\n".join(failed)
            + "\nTheir finished outputs are kept: run the same command again to do the rest."
        )
    return results


__all__ = ["ShardsFailed", "check_accounting", "collect", "own_allocation", "register_launcher", "shard_name"]
