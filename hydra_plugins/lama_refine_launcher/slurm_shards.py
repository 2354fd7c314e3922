"""`hydra/launcher=slurm_shards` (conf/hydra/launcher/slurm_shards.yaml): Hydra's submitit SLURM
launcher that checks `sacct` before submitting and, once every job has ended, names each shard
whose job ended without a result (`lama_refine.batch.slurm`). Hydra takes launcher classes from the
`hydra_plugins` package only, hence this module."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # without the `slurm` extra there is no SLURM launcher to extend
    SlurmLauncher = None

if SlurmLauncher is not None:
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, filter_overrides
    from omegaconf import OmegaConf

    log = logging.getLogger(__name__)

    class ShardsSlurmLauncher(SlurmLauncher):
        """hydra-submitit-launcher 1.2's `launch`, with `check_accounting` first and `collect` last
        (its own ends with `[j.results()[0] for j in jobs]`, which stops at the first lost job)."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            import submitit

            from lama_refine.batch.slurm import ShardsFailed, check_accounting, collect

            assert self.config is not None and len(job_overrides) > 0
            check_accounting()
            init_keys = {"max_num_timeout", "submitit_folder"}
            executor = submitit.AutoExecutor(
                cluster=self._EXECUTOR,
                folder=self.params["submitit_folder"],
                slurm_max_num_timeout=self.params.get("max_num_timeout", 0),
            )
            baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(
                **{
                    k if k in baseparams else f"{self._EXECUTOR}_{k}": v
                    for k, v in self.params.items()
                    if k not in init_keys
                }
            )
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
            job_params: list[Any] = []
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
            try:
                jobs = executor.map_array(self, *zip(*job_params, strict=False))
            except submitit.core.utils.FailedJobError as e:  # sbatch said no: its own words suffice
                raise ShardsFailed(
                    f"sbatch refused the sweep's job array: {str(e).strip()}. The script it was "
                    f"given is in {sweep_dir / '.submitit'}; check hydra.launcher.partition, "
                    "gpus_per_node, cpus_per_task and mem_gb against this cluster"
                ) from None
            first = jobs[0].job_id.split("_")[0]
            log.info(
                f"submitted SLURM job {first}"
                + (f" (an array of {len(jobs)})" if len(jobs) > 1 else "")
                + f"; logs in {sweep_dir}"
            )
            return collect(jobs, job_overrides)
