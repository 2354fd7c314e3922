import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lama_refine.parts.padding import ceil_to_multiple, pad_reflect, pad_symmetric


@settings(max_examples=50, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), modulo=st.sampled_from([1, 2, 4, 8, 16]))
def test_symmetric_padding_equals_numpy(h, w, modulo):
    x = torch.rand(1, 2, h, w)
    expected = np.pad(
        x.numpy(),
        ((0, 0), (0, 0), (0, ceil_to_multiple(h, modulo) - h), (0, ceil_to_multiple(w, modulo) - w)),
        mode="symmetric",
    )
    assert np.array_equal(pad_symmetric(x, modulo).numpy(), expected)


@settings(max_examples=50, deadline=None)
@given(h=st.integers(8, 40), w=st.integers(8, 40))
def test_reflect_padding_keeps_pixels_and_reaches_multiple(h, w):
    x = torch.rand(1, 3, h, w)
    y = pad_reflect(x, 8)
    assert y.shape[-2] % 8 == 0 and y.shape[-1] % 8 == 0
    assert torch.equal(y[..., :h, :w], x)


def test_reflect_padding_of_a_too_small_image_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        pad_reflect(torch.rand(1, 3, 3, 20), 8)
