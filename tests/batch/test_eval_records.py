"""lama-refine-eval keeps per-image results by digests: a killed evaluation resumes, a changed model,
photo or setting measures again (issue 21 item 3, issue 23 item 6)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN
from PIL import Image
from test_evaluate import gt_folder, rows_of

import lama_refine.app.evaluate as evaluate
from lama_refine.batch.eval_records import PER_IMAGE
from lama_refine.config import compose


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMA_REFINE_HOME", str(tmp_path / "home"))


def model_at(folder: Path, case: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(GOLDEN / case / "generator.safetensors", folder / "model.safetensors")
    shutil.copy(GOLDEN / case / "generator.yaml", folder / "model.yaml")
    return folder / "model.safetensors"


REAL_TIMED_RUN = evaluate.timed_run


class Killed(Exception):
    """Stands in for a kill between two images."""


def measured(monkeypatch, fail_after: int | None = None) -> list[str]:
    """The images timed_run measures from now on; with `fail_after`, a kill after that many."""
    names: list[str] = []

    def counting(inpainter, image, mask):
        if fail_after is not None and len(names) == fail_after:
            raise Killed
        names.append(f"{image.shape[-2]}x{image.shape[-1]}")
        return REAL_TIMED_RUN(inpainter, image, mask)

    monkeypatch.setattr(evaluate, "timed_run", counting)
    return names


@pytest.mark.slow  # six evaluations, ~20 s
def test_a_killed_evaluation_resumes_and_a_changed_model_or_photo_measures_again(tmp_path, monkeypatch):
    gt = gt_folder(tmp_path, 3)
    model = model_at(tmp_path / "m", "three_scales")
    cfg = compose(
        [
            f"gt_dir={gt}",
            f"outdir={tmp_path / 'out'}",
            f"model.path={model}",
            "progress=false",
            "visuals=0",
            "warmup=false",
            "refine=false",
        ],
        config_name="evaluate",
    )
    out = tmp_path / "out"
    with pytest.raises(Killed):
        measured(monkeypatch, fail_after=2)
        evaluate.evaluate(cfg)
    assert [json.loads(line)["image"] for line in (out / PER_IMAGE).read_text().splitlines()] == ["crop0", "crop1"]

    names = measured(monkeypatch)
    first = evaluate.evaluate(cfg)
    assert len(names) == 1  # only crop2
    assert [r["image"] for r in rows_of(out / "metrics.csv")] == ["crop0", "crop1", "crop2", "mean"]
    assert evaluate.evaluate(cfg).rows == first.rows and len(names) == 1  # nothing left to measure

    Image.fromarray(np.asarray(Image.open(gt / "crop1.png"))[::-1].copy()).save(gt / "crop1.png")  # another photo
    evaluate.evaluate(cfg)
    assert len(names) == 2

    model_at(tmp_path / "m", "odd_nonsquare_2scales")  # retrained, same path
    again = evaluate.evaluate(cfg)
    assert len(names) == 5 and again.rows != first.rows

    other = compose(
        [
            f"gt_dir={gt}",
            f"outdir={out}",
            f"model.path={model}",
            "progress=false",
            "visuals=0",
            "warmup=false",
            "refine=false",
            "mask.dilate=2",
        ],
        config_name="evaluate",
    )
    evaluate.evaluate(other)
    assert len(names) == 8  # another setting: measured again


@pytest.mark.slow  # two subprocess sweeps, ~20 s
def test_rerunning_a_killed_sweeps_command_measures_only_what_it_lacks(tmp_path):
    """Hydra starts each sweep in a new folder; the rerun reads the earlier sweep's records.
    `max_images` changes no measurement, so a first sweep of one image stands for a killed one."""
    import os
    import subprocess
    import sys

    from lama_refine.app.report import PICTURES

    gt = gt_folder(tmp_path, 2)
    model = model_at(tmp_path / "m", "odd_nonsquare_2scales")
    out = tmp_path / "out"
    args = [f"gt_dir={gt}", f"outdir={out}", f"model.path={model}", "progress=false", "visuals=1"]
    args += ["warmup=false", "lpips=null", "refiner.n_iters=2", "pyramid=fixed", "refine=true,false"]
    env = {**os.environ, "PYTHONPATH": str(Path(evaluate.__file__).parents[2]), "OMP_NUM_THREADS": "1"}

    def sweep(*more: str) -> str:
        command = [sys.executable, "-m", "lama_refine.app.evaluate", "--multirun", *args, *more]
        proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    sweep("max_images=1", "hydra.sweep.dir=" + str(out / "sweeps" / "first"))
    log = sweep()
    assert log.count("1 of 2 images measured before under the same settings") == 2  # one per setting
    (second,) = [p for p in (out / "sweeps").iterdir() if p.name != "first"]
    for setting in ("refine=True", "refine=False"):
        lines = (second / setting / PER_IMAGE).read_text().splitlines()
        assert sorted(json.loads(line)["image"] for line in lines) == ["crop0", "crop1"]  # self-contained
        assert all((second / setting / kind.format("crop0")).is_file() for kind in PICTURES.values())
        assert (second / setting / "visuals" / "crop0.png").is_file()
        first = {r["image"]: r for r in rows_of(out / "sweeps" / "first" / setting / "metrics.csv")}
        assert rows_of(second / setting / "metrics.csv")[0] == first["crop0"]  # the same measurement
    assert "comparison of 2 settings" in log
    assert sweep().count("2 of 2 images measured before") == 2  # and again: nothing left
