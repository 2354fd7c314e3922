import functools
import json
import logging
from functools import partial

import numpy as np
import pytest
import torch
from conftest import FIXTURES, GOLDEN, Case

from lama_refine.parts.downsample import AllPixelsMaskDownsampler, BlurMaskDownsampler, GaussianDownsampler
from lama_refine.parts.partition import EvenPartitioner
from lama_refine.parts.pyramid import FixedPyramid, OriginalPyramid
from lama_refine.parts.refine import L1Refiner, PlainRefiner, ellipse_kernel
from lama_refine.pipeline import Inpainter, plain_inpaint


def test_ellipse_kernel_equals_opencv():
    expected = torch.tensor(json.loads((FIXTURES / "ellipse15.json").read_text()), dtype=torch.float32)
    assert torch.equal(ellipse_kernel(15), expected)


@functools.cache
def _refine_case(name):
    return refine_case_uncached(Case(GOLDEN / name))


def refine_case(case):
    """(refiner, levels, result) of the case's original parameters, computed once per case."""
    return _refine_case(case.name)


def refine_case_uncached(case):
    p = case.params
    ds = GaussianDownsampler()
    levels = OriginalPyramid(ds, BlurMaskDownsampler(), p["min_side"], p["max_scales"], p["px_budget"]).build(
        case.image(), case.mask()
    )
    refiner = L1Refiner(ds, AllPixelsMaskDownsampler(), p["n_iters"], p["lr"], p["modulo"])
    partition = EvenPartitioner().split(case.generator(), [torch.device("cpu")] * case.n_devices)
    return refiner, levels, refiner.refine(partition, levels)


@pytest.mark.slow  # seconds: full suite only
def test_each_scale_matches_the_original(case):
    _, _, result = refine_case(case)
    assert len(result.scales) == case.meta["n_scales"]
    for k, scale in enumerate(result.scales):
        assert np.abs(scale.numpy() - case.scales[f"result_{k}"]).max() <= 1e-5
    assert np.abs(result.image.numpy() - case.scales[f"result_{len(result.scales) - 1}"]).max() <= 1e-5


def test_losses_match_the_original_per_iteration(case):
    _, _, result = refine_case(case)
    for ours, theirs in zip(result.losses, case.losses["per_scale"], strict=True):
        assert len(ours) == len(theirs)
        if theirs:
            assert np.allclose(ours, theirs, rtol=1e-5, atol=0)


def test_loss_masks_match_the_original_including_float32_pinholes(case):
    refiner, levels, _ = refine_case(case)
    from lama_refine.parts.padding import pad_reflect

    for k in range(1, len(levels)):
        mask = (pad_reflect(levels[k].mask, 8) >= 1e-8).float()
        ours = refiner.coarse_loss_mask(mask, levels[k].size)
        assert np.array_equal(ours.float().numpy(), case.scales[f"loss_mask_{k}"])


def test_known_pixels_are_kept_and_output_in_range(case):
    _, levels, result = refine_case(case)
    known = levels[-1].mask.expand_as(result.image) == 0
    assert torch.equal(result.image[known], levels[-1].image[known])
    assert result.image.min() >= 0 and result.image.max() <= 1


@pytest.mark.slow  # seconds: full suite only
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


@pytest.mark.slow  # seconds: full suite only
def test_refinement_changes_the_hole_only_a_little_from_one_iteration(case):
    p = case.params
    ds = GaussianDownsampler()
    levels = OriginalPyramid(ds, BlurMaskDownsampler(), p["min_side"], p["max_scales"], p["px_budget"]).build(
        case.image(), case.mask()
    )
    partition = EvenPartitioner().split(case.generator(), [torch.device("cpu")])
    one = L1Refiner(ds, AllPixelsMaskDownsampler(), n_iters=1).refine(partition, levels).image
    many = L1Refiner(ds, AllPixelsMaskDownsampler(), n_iters=p["n_iters"]).refine(partition, levels).image
    diff = (one - many).abs().max().item()
    expected = case.meta["determinism"]["refined_vs_n_iters_1_max_abs_diff"]
    assert diff == pytest.approx(expected, rel=1e-3)


# --- alternatives and knobs (one small case: 2 scales, 3 blocks) ---


@pytest.fixture(scope="module")
def small():
    case = Case(GOLDEN / "odd_nonsquare_2scales")
    ds = GaussianDownsampler()
    levels = OriginalPyramid(ds, BlurMaskDownsampler(), min_side=96).build(case.image(), case.mask())
    partition = EvenPartitioner().split(case.generator(), [torch.device("cpu")])
    return case, levels, partition


def l1(**kwargs):
    return L1Refiner(GaussianDownsampler(), AllPixelsMaskDownsampler(), **{"n_iters": 4, **kwargs})


def test_plain_refiner_equals_plain_inference_where_no_padding_is_needed():
    case = Case(GOLDEN / "odd_nonsquare_2scales")
    image, mask = case.image()[..., :168, :240], case.mask()[..., :168, :240]  # multiples of 8
    g = case.generator()
    expected = plain_inpaint(g, image, mask)
    levels = OriginalPyramid(GaussianDownsampler(), BlurMaskDownsampler(), min_side=96).build(image, mask)
    assert len(levels) == 2  # coarser levels are ignored
    ours = PlainRefiner().refine(EvenPartitioner().split(g, [torch.device("cpu")] * 2), levels)
    assert ours.losses == [[]] and ours.image.shape == expected.shape
    assert (ours.image - expected).abs().max() <= 1e-6
    pipeline = Inpainter(
        g, FixedPyramid(GaussianDownsampler(), BlurMaskDownsampler(), n_scales=1), PlainRefiner(), EvenPartitioner()
    )
    assert (pipeline(image, mask) - expected).abs().max() <= 1e-6


def test_plain_refiner_is_the_l1_refiner_on_one_scale(small):
    _, levels, partition = small
    assert torch.equal(PlainRefiner().refine(partition, levels).image, l1().refine(partition, levels[-1:]).image)


@pytest.mark.slow  # seconds: full suite only
def test_loss_weights_scale_the_two_terms(small):
    _, levels, partition = small
    first = {
        w: l1(known_weight=w[0], coarse_weight=w[1]).refine(partition, levels).losses[1][0]
        for w in [(1.0, 0.0), (0.0, 1.0), (2.0, 0.5)]
    }
    known, coarse = first[(1.0, 0.0)], first[(0.0, 1.0)]
    assert known > 0 and coarse > 0
    assert first[(2.0, 0.5)] == pytest.approx(2 * known + 0.5 * coarse, rel=1e-6)


class Recording(L1Refiner):
    """Keeps what the optimiser was given."""

    def make_optimizer(self, params):
        self.optimised = [tuple(p.shape) for p in params]
        self.last_optimizer = super().make_optimizer(params)
        return self.last_optimizer


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.parametrize("which,channels", [("both", [16, 48]), ("local", [16]), ("global", [48])])
def test_optimize_selects_the_ffc_branch(small, which, channels):
    _, levels, partition = small
    refiner = Recording(GaussianDownsampler(), AllPixelsMaskDownsampler(), n_iters=4, optimize=which)
    result = refiner.refine(partition, levels)
    assert [shape[1] for shape in refiner.optimised] == channels  # ngf 8 * 2**3 = 64: 25 % local
    assert all(np.isfinite(result.losses[1]))


@pytest.mark.slow  # seconds: full suite only
def test_optimizing_one_branch_moves_the_result_differently_from_both(small):
    _, levels, partition = small
    start = l1(n_iters=1).refine(partition, levels).image
    change = {
        w: (l1(optimize=w).refine(partition, levels).image - start).abs().sum().item()
        for w in ("both", "local", "global")
    }
    assert 0 < change["local"] and 0 < change["global"]
    assert change["both"] != change["local"] and change["both"] != change["global"]


@pytest.mark.slow  # seconds: full suite only
def test_optimizer_is_pluggable_and_gets_the_refiners_lr(small):
    _, levels, partition = small
    sgd = Recording(
        GaussianDownsampler(),
        AllPixelsMaskDownsampler(),
        n_iters=4,
        lr=0.0,
        optimizer=partial(torch.optim.SGD, momentum=0.9),
    )
    frozen = sgd.refine(partition, levels).image
    assert isinstance(sgd.last_optimizer, torch.optim.SGD) and sgd.last_optimizer.defaults["lr"] == 0.0
    # lr 0: the features never move, so the result is the first forward's
    assert torch.equal(frozen, l1(n_iters=1).refine(partition, levels).image)
    moved = l1(lr=5.0, optimizer=torch.optim.SGD).refine(partition, levels)
    assert not torch.equal(moved.image, frozen) and moved.losses[1][-1] < moved.losses[1][0]


def thin_stroke_levels(case):
    image = case.image()
    mask = torch.zeros_like(image[:, :1])
    mask[..., 40:46, 10:120] = 1  # a 6-px stroke: the eroded coarse mask is empty
    return OriginalPyramid(GaussianDownsampler(), BlurMaskDownsampler(), min_side=64).build(image, mask)


@pytest.mark.slow  # seconds: full suite only
def test_empty_loss_mask_policies(small, caplog):
    case, _, partition = small
    levels = thin_stroke_levels(case)
    with caplog.at_level(logging.WARNING):
        ignored = l1(on_empty_loss_mask="ignore").refine(partition, levels)
    assert "empty" not in caplog.text
    assert torch.equal(ignored.image, l1().refine(partition, levels).image)  # same output as "warn", silently

    seen = []

    class Spy(L1Refiner):
        def objective(self, pred, pred_down, s):
            seen.append(s.coarse_mask)
            return super().objective(pred, pred_down, s)

    uneroded = Spy(GaussianDownsampler(), AllPixelsMaskDownsampler(), n_iters=4, on_empty_loss_mask="uneroded")
    result = uneroded.refine(partition, levels)
    mask = (pad_reflect_8(levels[1].mask) >= 1e-8).float()
    expected = uneroded.coarse_loss_mask(mask, levels[1].size, erode=False)
    assert expected.any() and not uneroded.coarse_loss_mask(mask, levels[1].size).any()
    assert torch.equal(seen[0], expected)
    assert not torch.equal(result.image, ignored.image)
    known = levels[-1].mask.expand_as(result.image) == 0
    assert torch.equal(result.image[known], levels[-1].image[known])


def pad_reflect_8(x):
    from lama_refine.parts.padding import pad_reflect

    return pad_reflect(x, 8)


@pytest.mark.parametrize("kwargs", [{"optimize": "decoder"}, {"on_empty_loss_mask": "nan"}, {"n_iters": 0}])
def test_invalid_knobs_are_refused(kwargs):
    with pytest.raises(ValueError):
        l1(**kwargs)
