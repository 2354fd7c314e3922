"""Folders of jobs: the batch loop, its manifest, shards and out-of-memory retries (runner); what made an
output and when a rerun redoes it (provenance); one job done once by runs sharing a folder (claims);
lama-refine-eval's per-image records (eval_records); a --multirun job's output folder (sweep); and what
the slurm_shards launcher adds to Hydra's submitit launcher (slurm).
"""

from lama_refine._compat import old_names

__getattr__ = old_names(__name__, "runner")
