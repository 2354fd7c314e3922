import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lama_refine.downsample import (AllPixelsMaskDownsampler, BlurMaskDownsampler, GaussianDownsampler,
                                    NearestMaskDownsampler)

sizes = st.integers(4, 40)


def random_mask(h, w, density, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 1, h, w, generator=g) < density).float()


@settings(max_examples=40, deadline=None)
@given(h=sizes, w=sizes, density=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_mask_downsamplers_halve_and_stay_binary_and_nested(h, w, density, seed):
    mask = random_mask(h, w, density, seed)
    out = {name: ds(mask) for name, ds in [("all", AllPixelsMaskDownsampler()), ("nearest", NearestMaskDownsampler()),
                                           ("blur", BlurMaskDownsampler())]}
    for m in out.values():
        assert m.shape == (1, 1, h // 2, w // 2)
        assert set(m.unique().tolist()) <= {0.0, 1.0}
    # all-pixels holes are a subset of nearest's, which are a subset of the any-pixel (blur) rule's.
    assert torch.all(out["all"] <= out["nearest"])
    assert torch.all(out["nearest"] <= out["blur"])


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
