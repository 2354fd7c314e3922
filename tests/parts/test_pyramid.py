import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lama_refine.parts.downsample import BlurMaskDownsampler, GaussianDownsampler
from lama_refine.parts.pyramid import (
    FixedPyramid,
    FullResolutionPyramid,
    OriginalPyramid,
    TrainResolutionPyramid,
    count_scales,
    fit_pixel_budget,
    halvings_to_target,
)


def original_pyramid(params):
    return OriginalPyramid(
        GaussianDownsampler(), BlurMaskDownsampler(), params["min_side"], params["max_scales"], params["px_budget"]
    )


def test_pyramid_levels_match_the_original(case):
    levels = original_pyramid(case.params).build(case.image(), case.mask())
    assert len(levels) == case.meta["n_scales"]
    assert [list(lv.size) for lv in levels] == case.meta["pyramid_hw_coarsest_first"]
    for k, level in enumerate(levels):
        assert np.abs(level.image.numpy() - case.pyramid[f"image_{k}"]).max() <= 1e-6
        assert np.abs(level.mask.numpy() - case.pyramid[f"mask_{k}"]).max() <= 1e-6


@pytest.mark.parametrize(
    "h,w,min_side,expected",
    [
        (195, 247, 64, 3),
        (171, 243, 96, 2),
        (1000, 1000, 512, 2),
        (725, 2000, 512, 2),
        (724, 2000, 512, 1),
        (1449, 1449, 512, 3),
        (1448, 1449, 512, 2),
        (4000, 4000, 512, 3),
        (100, 100, 512, 1),
    ],
)
def test_scale_count_thresholds_are_sqrt2_multiples_of_min_side(h, w, min_side, expected):
    assert count_scales(h, w, min_side, 3) == expected


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 5000), w=st.integers(1, 5000), min_side=st.integers(16, 1024), max_scales=st.integers(1, 6))
def test_scale_count_is_bounded_and_monotonic(h, w, min_side, max_scales):
    n = count_scales(h, w, min_side, max_scales)
    assert 1 <= n <= max_scales
    assert count_scales(h * 2, w * 2, min_side, max_scales) >= n


@settings(max_examples=30, deadline=None)
@given(h=st.integers(8, 120), w=st.integers(8, 120), budget=st.integers(64, 20000))
def test_pixel_budget_truncates_sides_and_keeps_mask_binary(h, w, budget):
    image, mask = torch.rand(1, 3, h, w), (torch.rand(1, 1, h, w) > 0.7).float()
    small_image, small_mask = fit_pixel_budget(image, mask, budget)
    if h * w <= budget:
        assert small_image is image and small_mask is mask
    else:
        r = math.sqrt(budget / (h * w))
        assert small_image.shape[-2:] == (int(h * r), int(w * r))
        assert small_mask.shape[-2:] == small_image.shape[-2:]
        assert set(small_mask.unique().tolist()) <= {0.0, 1.0}


def test_pyramid_sizes_halve_with_floor_and_masks_grow():
    image, mask = torch.rand(1, 3, 195, 247), torch.zeros(1, 1, 195, 247)
    mask[..., 100, 50:150] = 1
    levels = OriginalPyramid(GaussianDownsampler(), BlurMaskDownsampler(), min_side=64).build(image, mask)
    assert [lv.size for lv in levels] == [(48, 61), (97, 123), (195, 247)]
    # the any-pixel rule keeps the 1-px stroke at every coarser scale
    assert all(lv.mask.sum() > 0 for lv in levels)


def parts():
    return GaussianDownsampler(), BlurMaskDownsampler()


def test_full_resolution_never_resizes_where_the_original_would():
    image, mask = torch.rand(1, 3, 300, 260), torch.zeros(1, 1, 300, 260)
    mask[..., 100:140, 50:90] = 1
    budget = 20_000  # the original shrinks this image to 151x131
    assert OriginalPyramid(*parts(), min_side=64, px_budget=budget).build(image, mask)[-1].size == (151, 131)
    levels = FullResolutionPyramid(*parts(), min_side=64).build(image, mask)
    assert levels[-1].image is image and levels[-1].mask is mask
    assert [lv.size for lv in levels] == [(75, 65), (150, 130), (300, 260)]  # same count rule as the original


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("h,w", [(40, 33), (171, 243), (600, 500)])
def test_fixed_gives_exactly_n_scales_whatever_the_size(n, h, w):
    levels = FixedPyramid(*parts(), n_scales=n).build(torch.rand(1, 3, h, w), torch.zeros(1, 1, h, w))
    assert len(levels) == n
    assert levels[-1].size == (h, w)
    assert [lv.size for lv in levels] == [(h >> k, w >> k) for k in reversed(range(n))]


def test_fixed_applies_its_pixel_budget_and_refuses_too_many_scales():
    levels = FixedPyramid(*parts(), n_scales=2, px_budget=2000).build(
        torch.rand(1, 3, 100, 80), torch.zeros(1, 1, 100, 80)
    )
    assert (
        levels[-1].size == fit_pixel_budget(torch.rand(1, 3, 100, 80), torch.zeros(1, 1, 100, 80), 2000)[0].shape[-2:]
    )
    with pytest.raises(ValueError, match="short side"):
        FixedPyramid(*parts(), n_scales=4).build(torch.rand(1, 3, 7, 50), torch.zeros(1, 1, 7, 50))


@pytest.mark.parametrize(
    "short,target,halvings",
    [(1024, 256, 2), (256, 256, 0), (700, 256, 1), (200, 256, 0), (2000, 256, 3), (1449, 256, 2), (1500, 256, 3)],
)
def test_halvings_bring_the_short_side_nearest_to_the_target(short, target, halvings):
    assert halvings_to_target(short, target) == halvings


@settings(max_examples=80, deadline=None)
@given(short=st.integers(1, 20000), target=st.integers(16, 1024))
def test_the_chosen_coarsest_side_is_nearest_among_all_halvings(short, target):
    k = halvings_to_target(short, target)
    sides = [short >> j for j in range(short.bit_length())]
    distance = [abs(math.log2(s / target)) for s in sides]
    assert distance[k] == min(distance)


def test_train_resolution_puts_the_coarsest_level_near_the_training_size():
    h, w = 1100, 1500
    levels = TrainResolutionPyramid(*parts()).build(torch.rand(1, 3, h, w), torch.zeros(1, 1, h, w))
    assert [lv.size for lv in levels] == [(275, 375), (550, 750), (1100, 1500)]
    capped = TrainResolutionPyramid(*parts(), train_resolution=128, max_scales=2)
    assert (
        capped.scale_count(h, w) == 2 and TrainResolutionPyramid(*parts(), train_resolution=128).scale_count(h, w) == 4
    )
