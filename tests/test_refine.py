import functools
import json
import logging

import numpy as np
import pytest
import torch

from lama_refine.downsample import AllPixelsMaskDownsampler, BlurMaskDownsampler, GaussianDownsampler
from lama_refine.partition import EvenPartitioner
from lama_refine.pyramid import OriginalPyramid
from lama_refine.refine import L1Refiner, ellipse_kernel

from conftest import FIXTURES, GOLDEN, Case


def test_ellipse_kernel_equals_opencv():
    expected = torch.tensor(json.loads((FIXTURES / "ellipse15.json").read_text()), dtype=torch.float32)
    assert torch.equal(ellipse_kernel(15), expected)


@functools.lru_cache(maxsize=None)
def _refine_case(name):
    return refine_case_uncached(Case(GOLDEN / name))


def refine_case(case):
    """(refiner, levels, result) of the case's original parameters, computed once per case."""
    return _refine_case(case.name)


def refine_case_uncached(case):
    p = case.params
    ds = GaussianDownsampler()
    levels = OriginalPyramid(ds, BlurMaskDownsampler(), p["min_side"], p["max_scales"], p["px_budget"]).build(
        case.image(), case.mask())
    refiner = L1Refiner(ds, AllPixelsMaskDownsampler(), p["n_iters"], p["lr"], p["modulo"])
    partition = EvenPartitioner().split(case.generator(), [torch.device("cpu")] * case.n_devices)
    return refiner, levels, refiner.refine(partition, levels)


def test_each_scale_matches_the_original(case):
    _, _, result = refine_case(case)
    assert len(result.scales) == case.meta["n_scales"]
    for k, scale in enumerate(result.scales):
        assert np.abs(scale.numpy() - case.scales[f"result_{k}"]).max() <= 1e-5
    assert np.abs(result.image.numpy() - case.scales[f"result_{len(result.scales) - 1}"]).max() <= 1e-5


def test_losses_match_the_original_per_iteration(case):
    _, _, result = refine_case(case)
    for ours, theirs in zip(result.losses, case.losses["per_scale"]):
        assert len(ours) == len(theirs)
        if theirs:
            assert np.allclose(ours, theirs, rtol=1e-5, atol=0)


def test_loss_masks_match_the_original_including_float32_pinholes(case):
    refiner, levels, _ = refine_case(case)
    from lama_refine.padding import pad_reflect
    for k in range(1, len(levels)):
        mask = (pad_reflect(levels[k].mask, 8) >= 1e-8).float()
        ours = refiner.coarse_loss_mask(mask, levels[k].size)
        assert np.array_equal(ours.float().numpy(), case.scales[f"loss_mask_{k}"])


def test_known_pixels_are_kept_and_output_in_range(case):
    _, levels, result = refine_case(case)
    known = levels[-1].mask.expand_as(result.image) == 0
    assert torch.equal(result.image[known], levels[-1].image[known])
    assert result.image.min() >= 0 and result.image.max() <= 1


def test_empty_loss_mask_warns_and_keeps_output_finite(case, caplog):
    """Thin strokes only: erosion empties the coarse loss mask; the original's loss is NaN but its
    output finite. Ours must be finite, warn, and equal refinement on the known-pixel term alone."""
    image = case.image()
    mask = torch.zeros_like(image[:, :1])
    mask[..., 40:46, 10:120] = 1  # a 6-px stroke
    ds = GaussianDownsampler()
    levels = OriginalPyramid(ds, BlurMaskDownsampler(), min_side=64).build(image, mask)
    partition = EvenPartitioner().split(case.generator(), [torch.device("cpu")])

    class KnownOnly(L1Refiner):
        def objective(self, pred, pred_down, s):
            return torch.mean(torch.abs(pred[s.known] - s.image[s.known]))

    with caplog.at_level(logging.WARNING):
        result = L1Refiner(ds, AllPixelsMaskDownsampler(), n_iters=3).refine(partition, levels)
    assert "empty" in caplog.text
    assert all(np.isfinite(v) for losses in result.losses for v in losses)
    reference = KnownOnly(ds, AllPixelsMaskDownsampler(), n_iters=3).refine(partition, levels)
    assert torch.equal(result.image, reference.image)


def test_refinement_changes_the_hole_only_a_little_from_one_iteration(case):
    p = case.params
    ds = GaussianDownsampler()
    levels = OriginalPyramid(ds, BlurMaskDownsampler(), p["min_side"], p["max_scales"], p["px_budget"]).build(
        case.image(), case.mask())
    partition = EvenPartitioner().split(case.generator(), [torch.device("cpu")])
    one = L1Refiner(ds, AllPixelsMaskDownsampler(), n_iters=1).refine(partition, levels).image
    many = L1Refiner(ds, AllPixelsMaskDownsampler(), n_iters=p["n_iters"]).refine(partition, levels).image
    diff = (one - many).abs().max().item()
    expected = case.meta["determinism"]["refined_vs_n_iters_1_max_abs_diff"]
    assert diff == pytest.approx(expected, rel=1e-3)
