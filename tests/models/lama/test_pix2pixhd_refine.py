"""Refinement on LaMa's pix2pixHD generators, where the original fails (its front emits one
tensor, not FFC's (local, global) pair). No reference numbers exist, so the invariants are checked."""

import shutil

import numpy as np
import pytest
import torch
from conftest import FIXTURES, Case, max_mean_diff

from lama_refine.app.cli import run
from lama_refine.config import compose
from lama_refine.models import GlobalGenerator, load_generator
from lama_refine.parts.downsample import AllPixelsMaskDownsampler, BlurMaskDownsampler, GaussianDownsampler
from lama_refine.parts.partition import EvenPartitioner
from lama_refine.parts.pyramid import OriginalPyramid
from lama_refine.parts.refine import L1Refiner, PlainRefiner

CASE = Case(FIXTURES / "golden-pix2pixhd" / "odd_nonsquare_refine_fails")


@pytest.fixture(scope="module")
def setup():
    p = CASE.params
    generator = load_generator(CASE.path / "generator.safetensors").generator
    assert isinstance(generator, GlobalGenerator)
    ds = GaussianDownsampler()
    levels = OriginalPyramid(ds, BlurMaskDownsampler(), p["min_side"], p["max_scales"], p["px_budget"]).build(
        CASE.image(), CASE.mask()
    )
    partition = EvenPartitioner().split(generator, [torch.device("cpu")])
    refiner = L1Refiner(ds, AllPixelsMaskDownsampler(), p["n_iters"], p["lr"], p["modulo"])
    return levels, partition, refiner, refiner.refine(partition, levels)


@pytest.mark.slow  # seconds: full suite only
def test_refinement_runs_on_the_pyramid_the_original_built(setup):
    levels, _, _, result = setup
    assert [list(lv.size) for lv in levels] == CASE.meta["refine_pyramid_hw_coarsest_first"]
    assert len(result.scales) == 2 and result.image.shape == (1, 3, 157, 211)


def test_known_pixels_are_kept_and_output_finite_in_range(setup):
    levels, _, _, result = setup
    known = levels[-1].mask.expand_as(result.image) == 0
    assert torch.equal(result.image[known], levels[-1].image[known])
    assert torch.isfinite(result.image).all() and result.image.min() >= 0 and result.image.max() <= 1


def test_the_single_feature_tensor_is_optimised_and_the_loss_falls(setup):
    _, _, _, result = setup
    losses = result.losses[1]
    assert len(losses) == CASE.params["n_iters"] and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))


def test_one_scale_refinement_equals_plain(setup):
    levels, partition, refiner, _ = setup
    one = refiner.refine(partition, levels[-1:])
    assert one.losses == [[]]
    assert torch.equal(one.image, PlainRefiner().refine(partition, levels).image)


def test_branch_selection_is_refused_for_a_single_feature_tensor(setup):
    levels, partition, _, _ = setup
    refiner = L1Refiner(GaussianDownsampler(), AllPixelsMaskDownsampler(), n_iters=2, optimize="global")
    with pytest.raises(ValueError, match="none of the front's features"):
        refiner.refine(partition, levels)


def run_cli(tmp_path, *extra):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    indir.mkdir()
    shutil.copy(CASE.path / "image.png", indir / "photo.png")
    shutil.copy(CASE.path / "mask.png", indir / "photo_mask.png")
    summary = run(
        compose(
            [
                f"model.path={CASE.path / 'checkpoint'}",
                f"indir={indir}",
                f"outdir={outdir}",
                "out_ext=.npy",
                "progress=false",
                *CASE.overrides(),
                *extra,
            ]
        )
    )
    assert not summary.failed
    return np.load(outdir / "photo_mask.npy")


def test_plain_through_the_cli_matches_the_original(tmp_path):
    out = run_cli(tmp_path, "refine=false")
    assert max_mean_diff(out, CASE.npy("plain"))[0] <= 1e-5


def test_refinement_through_the_cli_writes_an_output_where_the_original_exits(tmp_path):
    out = run_cli(tmp_path, "refine=true")
    image, mask = CASE.image()[0].permute(1, 2, 0).numpy(), CASE.mask()[0, 0].numpy()
    assert out.shape == image.shape and np.isfinite(out).all()
    assert np.array_equal(out[mask == 0], image[mask == 0])
