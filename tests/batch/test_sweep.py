"""A sweep job's output folder (lama_refine.batch.sweep), shared by lama-refine and lama-refine-eval."""

from pathlib import Path

import pytest
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from lama_refine.batch.sweep import RESULT_NEUTRAL_KEYS, sweep_job_dir, sweep_setting


@pytest.fixture
def sweep_job(tmp_path):
    """Pretend to be one job of `--multirun <swept>`, with this job's own `overrides`."""

    def make(swept: list[str], overrides: list[str], num: int = 0) -> Path:
        sweep_dir = tmp_path / "sweep"
        sweep_dir.mkdir(exist_ok=True)
        OmegaConf.save({"hydra": {"overrides": {"task": swept}}}, sweep_dir / "multirun.yaml")
        hydra = OmegaConf.merge(
            OmegaConf.structured(HydraConf),
            {
                "mode": RunMode.MULTIRUN,
                "sweep": {"dir": str(sweep_dir)},
                "overrides": {"task": overrides},
                "job": {"num": num},
            },
        )
        HydraConfig.instance().set_config(OmegaConf.create({"hydra": hydra}))
        return sweep_dir

    yield make
    HydraConfig.instance().cfg = None


def test_outside_a_sweep_the_folder_is_the_base(tmp_path):
    HydraConfig.instance().cfg = None
    assert sweep_job_dir(tmp_path) == tmp_path and sweep_setting() == ""


def test_two_checkpoints_of_one_sweep_get_two_folders(sweep_job, tmp_path):
    """`--multirun model.checkpoint=a.ckpt,b.ckpt` used to write both jobs into one folder (the
    key was listed as not changing results), so the second job skipped every file."""
    swept = ["model.checkpoint=a.ckpt,b.ckpt", "indir=photos"]
    folders = set()
    for num, name in enumerate(["a.ckpt", "b.ckpt"]):
        sweep_job(swept, [f"model.checkpoint={name}", "indir=photos"], num)
        folders.add(sweep_job_dir(tmp_path / "out"))
    assert folders == {tmp_path / "out" / "model.checkpoint=a.ckpt", tmp_path / "out" / "model.checkpoint=b.ckpt"}


def test_result_neutral_keys_share_one_folder(sweep_job, tmp_path):
    swept = ["shard=0/2,1/2", "refine=true,false"]
    sweep_job(swept, ["shard=1/2", "refine=false"], 3)
    assert sweep_job_dir(tmp_path / "out") == tmp_path / "out" / "refine=false"
    sweep_job(swept[:1], ["shard=1/2"], 3)
    assert sweep_job_dir(tmp_path / "out") == tmp_path / "out"  # lama-refine: the shards share outdir
    assert sweep_job_dir(tmp_path / "out", "job3") == tmp_path / "out" / "job3"  # lama-refine-eval's name


def test_only_placement_and_bookkeeping_keys_are_result_neutral():
    assert "shard" in RESULT_NEUTRAL_KEYS
    for key in ("model.checkpoint", "model.path", "indir", "maskdir", "gt_dir", "mask_dir", "devices", "refine"):
        assert key not in RESULT_NEUTRAL_KEYS
