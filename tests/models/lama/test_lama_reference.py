"""Trained weights against LaMa's own numbers: the CLI on tests/fixtures/default-model-lama/.

The fixture was made by tools/make_lama_reference.py with LaMa's code (load_checkpoint,
bin/predict.py's plain branch, refine_predict) on the model file its meta.json names, a real
photo crop and a seeded LaMa mask. Random-weight goldens (tests/fixtures/golden/) cannot show
what a trained network's larger activations and gradients do to the refinement; this can.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, Case, max_mean_diff

from lama_refine.app.cli import run
from lama_refine.config import compose

REPO = Path(__file__).resolve().parents[3]
FIXTURE = FIXTURES / "default-model-lama"
REGENERATE = "python tools/make_lama_reference.py --lama /path/to/advimman/lama"

pytestmark = pytest.mark.skipif(
    not (FIXTURE / "meta.json").is_file(), reason=f"no LaMa reference in {FIXTURE}; make one with: {REGENERATE}"
)


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIXTURE / "meta.json").read_text())


@pytest.fixture(scope="module")
def model(meta) -> Path:
    """The model LaMa ran, which must still be the file at the path the fixture names."""
    path = REPO / meta["model"]["path"]
    assert path.is_file(), f"{path} (named by {FIXTURE / 'meta.json'}) is missing; regenerate: {REGENERATE}"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == meta["model"]["sha256"], (
        f"{meta['model']['path']} changed since the LaMa reference was made (sha256 {digest}, the "
        f"fixture's {meta['model']['sha256']}); regenerate it with: {REGENERATE} --model {meta['model']['path']}"
    )
    return path


def run_fixture(model: Path, tmp_path: Path, *extra: str) -> np.ndarray:
    indir, outdir = tmp_path / "in", tmp_path / "out"
    indir.mkdir()
    shutil.copy(FIXTURE / "image.png", indir / "photo.png")
    shutil.copy(FIXTURE / "mask.png", indir / "photo_mask.png")
    cfg = compose(
        [
            f"model.path={model}",
            f"indir={indir}",
            f"outdir={outdir}",
            "out_ext=.npy",
            "output.match_input_size=false",
            "progress=false",
            *Case(FIXTURE).overrides(),
            *extra,
        ]
    )
    summary = run(cfg)
    assert not summary.failed
    return np.load(outdir / "photo_mask.npy")


def test_the_reference_is_lamas_on_a_trained_plain_lama_model(meta):
    assert meta["lama"]["repository"] == "advimman/lama"
    assert (REPO / meta["model"]["path"]).suffix == ".safetensors"
    # The refinement must have had something to do, or the refined check would test plain twice.
    assert meta["plain_vs_refined_max_abs_diff"] > 1e-3


def test_plain_output_matches_lamas_predict(model, tmp_path):
    out = run_fixture(model, tmp_path, "refine=false")
    want = np.load(FIXTURE / "plain.npy")
    assert out.shape == want.shape
    assert max_mean_diff(out, want)[0] <= 1e-5


def test_refined_output_matches_lamas_refine_predict(model, tmp_path):
    out = run_fixture(model, tmp_path)
    want = np.load(FIXTURE / "refined.npy")
    assert out.shape == want.shape
    worst, mean = max_mean_diff(out, want)
    assert worst <= 1e-4 and mean <= 1e-5
