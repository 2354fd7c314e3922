import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lama_refine.parts.downsample import (
    AllPixelsMaskDownsampler,
    AntialiasedBilinearDownsampler,
    AreaDownsampler,
    AreaMaskDownsampler,
    BlurMaskDownsampler,
    GaussianDownsampler,
    NearestMaskDownsampler,
    TolerantAllPixelsMaskDownsampler,
)

sizes = st.integers(4, 40)


def random_mask(h, w, density, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 1, h, w, generator=g) < density).float()


@settings(max_examples=40, deadline=None)
@given(h=sizes, w=sizes, density=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_mask_downsamplers_halve_and_stay_binary_and_nested(h, w, density, seed):
    mask = random_mask(h, w, density, seed)
    out = {
        name: ds(mask)
        for name, ds in [
            ("all", AllPixelsMaskDownsampler()),
            ("nearest", NearestMaskDownsampler()),
            ("blur", BlurMaskDownsampler()),
            ("area", AreaMaskDownsampler()),
            ("all_tolerant", TolerantAllPixelsMaskDownsampler()),
            ("area_all", AreaMaskDownsampler(1.0)),
        ]
    }
    for m in out.values():
        assert m.shape == (1, 1, h // 2, w // 2)
        assert set(m.unique().tolist()) <= {0.0, 1.0}
    # all-pixels holes are a subset of nearest's, which are a subset of the any-pixel (blur) rule's.
    assert torch.all(out["all"] <= out["nearest"])
    assert torch.all(out["nearest"] <= out["blur"])
    # the tolerant rule only adds back what float rounding dropped; a stricter coverage threshold, fewer holes
    assert torch.all(out["all"] <= out["all_tolerant"])
    assert torch.all(out["area_all"] <= out["area"])


def test_thin_stroke_kept_by_blur_dropped_by_all():
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :, 15] = 1  # a 1-px vertical stroke
    assert BlurMaskDownsampler()(mask).sum() > 0
    assert AllPixelsMaskDownsampler()(mask).sum() == 0


@pytest.mark.parametrize("h,w", [(17, 23), (16, 16), (5, 9)])
def test_gaussian_downsampler_halves_with_floor_and_keeps_range(h, w):
    image = torch.rand(2, 3, h, w)
    out = GaussianDownsampler()(image)
    assert out.shape == (2, 3, h // 2, w // 2)
    assert out.min() >= 0 and out.max() <= 1


def test_gaussian_downsampler_is_differentiable():
    image = torch.rand(1, 3, 16, 16, requires_grad=True)
    GaussianDownsampler()(image).sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()


def test_nearest_keeps_a_1px_stroke_only_where_a_sampled_pixel_hits_it():
    # halving samples fine pixel 2i + 1 (the one nearest the coarse pixel's centre)
    for column, kept in [(15, True), (14, False)]:
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., :, column] = 1
        out = NearestMaskDownsampler()(mask)
        assert (out.sum() > 0) == kept
        if kept:
            assert torch.equal(out[0, 0, :, column // 2], torch.ones(16))
            assert out.sum() == 16


def test_all_pixels_rule_has_float32_pinholes_and_the_tolerant_rule_does_not():
    # bilinear weights for a non-integer ratio (97 -> 48) sum to 0.99999994 at some pixels
    ones = torch.ones(1, 1, 97, 123)
    assert (AllPixelsMaskDownsampler()(ones) == 0).any()  # the original's quirk, kept by `all`
    assert torch.equal(TolerantAllPixelsMaskDownsampler()(ones), torch.ones(1, 1, 48, 61))


def test_tolerant_rule_still_drops_thin_strokes_and_partly_covered_pixels():
    mask = torch.zeros(1, 1, 32, 33)
    mask[..., :, 15] = 1  # 1 px
    mask[..., :, 20:23] = 1  # 3 px: covers coarse column 10 (fine 20, 21) fully, 11 (22, 23) half
    out = TolerantAllPixelsMaskDownsampler()(mask)
    assert out[..., 7].sum() == 0 and out[..., 11].sum() == 0
    assert torch.equal(out[0, 0, :, 10], torch.ones(16))


@pytest.mark.parametrize("threshold", [0.25, 0.5, 0.75, 1.0])
def test_area_mask_is_a_hole_where_enough_of_the_2x2_block_is(threshold):
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 1, 40, 40, generator=g) < 0.5).float()
    coverage = F.avg_pool2d(mask, 2)  # even size: each coarse pixel sees one 2x2 block
    assert torch.equal(AreaMaskDownsampler(threshold)(mask), (coverage >= threshold).float())


def test_area_mask_with_threshold_1_is_the_all_pixels_rule_without_pinholes():
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(1, 1, 64, 48, generator=g) < 0.9).float()
    assert torch.equal(AreaMaskDownsampler(1.0)(mask), AllPixelsMaskDownsampler()(mask))  # even size: same rule
    with pytest.raises(ValueError):
        AreaMaskDownsampler(0.0)


def test_area_downsampler_is_the_mean_of_each_block():
    image = torch.rand(2, 3, 16, 22)
    assert torch.allclose(AreaDownsampler()(image), F.avg_pool2d(image, 2), atol=1e-7)
    assert AreaDownsampler()(torch.rand(1, 3, 17, 23)).shape == (1, 3, 8, 11)


def test_antialiased_bilinear_matches_pil_bilinear_resize():
    image = torch.rand(1, 1, 37, 52, generator=torch.Generator().manual_seed(2))
    ours = AntialiasedBilinearDownsampler()(image)[0, 0].numpy()
    pil = np.asarray(Image.fromarray(image[0, 0].numpy(), mode="F").resize((26, 18), Image.BILINEAR))
    assert np.abs(ours - pil).max() < 1e-5
    # and it is not the plain (aliasing) bilinear halving
    assert np.abs(ours - F.interpolate(image, size=(18, 26), mode="bilinear")[0, 0].numpy()).max() > 1e-2


@pytest.mark.parametrize("ds", [AreaDownsampler(), AntialiasedBilinearDownsampler()])
def test_alternative_downsamplers_halve_keep_range_and_are_differentiable(ds):
    image = torch.rand(1, 3, 17, 24, requires_grad=True)
    out = ds(image)
    assert out.shape == (1, 3, 8, 12) and out.min() >= 0 and out.max() <= 1
    out.sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()
