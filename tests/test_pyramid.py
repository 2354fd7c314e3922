import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lama_refine.downsample import BlurMaskDownsampler, GaussianDownsampler
from lama_refine.pyramid import OriginalPyramid, count_scales, fit_pixel_budget


def original_pyramid(params):
    return OriginalPyramid(GaussianDownsampler(), BlurMaskDownsampler(), params["min_side"], params["max_scales"],
                           params["px_budget"])


def test_pyramid_levels_match_the_original(case):
    levels = original_pyramid(case.params).build(case.image(), case.mask())
    assert len(levels) == case.meta["n_scales"]
    assert [list(lv.size) for lv in levels] == case.meta["pyramid_hw_coarsest_first"]
    for k, level in enumerate(levels):
        assert np.abs(level.image.numpy() - case.pyramid[f"image_{k}"]).max() <= 1e-6
        assert np.abs(level.mask.numpy() - case.pyramid[f"mask_{k}"]).max() <= 1e-6


@pytest.mark.parametrize("h,w,min_side,expected", [
    (195, 247, 64, 3), (171, 243, 96, 2), (1000, 1000, 512, 2), (725, 2000, 512, 2), (724, 2000, 512, 1),
    (1449, 1449, 512, 3), (1448, 1449, 512, 2), (4000, 4000, 512, 3), (100, 100, 512, 1),
])
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
