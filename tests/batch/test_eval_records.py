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
