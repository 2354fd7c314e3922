"""perf.tile_rows: the full-resolution tail run in bands equals the whole-image tail."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch import nn

from lama_refine.models import build_generator
from lama_refine.perf.tiling import (
    TiledTail,
    banded_conv_transpose,
    banded_conv_transpose_grad,
    find_tail,
    tile_tail,
)
from lama_refine.weights import DEFAULT_MODEL_PATH


def tail(channels: int = 6, act: nn.Module | None = None, pad: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(channels)
    norm.running_mean.uniform_(-0.5, 0.5)
    norm.running_var.uniform_(0.5, 2.0)
    norm.weight.data.uniform_(0.5, 1.5)
    mods = [
        nn.ConvTranspose2d(2 * channels, channels, 3, stride=2, padding=1, output_padding=1),
        norm,
        nn.ReLU(True),
        nn.ReflectionPad2d(pad),
        nn.Conv2d(channels, 3, 2 * pad + 1),
        act if act is not None else nn.Sigmoid(),
    ]
    return nn.Sequential(*mods).eval().requires_grad_(False).double()


@pytest.mark.slow  # seconds: full suite only
@settings(max_examples=25, deadline=None)
@given(h=st.integers(2, 14), w=st.integers(2, 9), rows=st.integers(4, 30), pad=st.integers(1, 3))
def test_bands_equal_the_whole_tail_in_value_and_input_gradient(h, w, rows, pad):
    rows = max(rows, pad + 1)
    whole = tail(pad=pad)
    if 2 * h <= pad:  # reflection needs more rows than the pad, banded or not
        return
    tiled = nn.Sequential(*tile_tail(list(whole), rows))
    assert isinstance(tiled[0], TiledTail)
    x = torch.randn(2, 12, h, w, dtype=torch.double, requires_grad=True)
    expected, got = whole(x), tiled(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
    g = torch.randn_like(expected)
    (g_expected,) = torch.autograd.grad(expected, x, g)
    (g_got,) = torch.autograd.grad(tiled(x), x, g)
    assert torch.allclose(g_got, g_expected, atol=1e-12, rtol=0)


@pytest.mark.slow  # seconds: full suite only
def test_gradcheck_through_the_bands():
    tiled = nn.Sequential(*tile_tail(list(tail(channels=2, act=nn.Tanh())), rows=5))
    x = torch.randn(1, 4, 6, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(tiled, (x,))


def test_finds_the_tail_of_the_shipped_generator_and_nothing_else():
    generator = build_generator(OmegaConf.load(DEFAULT_MODEL_PATH.with_suffix(".yaml")).generator)
    modules = list(generator.model)
    start = find_tail(modules)
    assert start == len(modules) - 6 and isinstance(modules[start], nn.ConvTranspose2d)
    assert find_tail(modules[:-3]) is None
    assert tile_tail(modules[:-3], 64) == modules[:-3]


def test_band_height_must_exceed_the_padding():
    with pytest.raises(ValueError, match="tile_rows"):
        tile_tail(list(tail()), rows=3)


def _front(generator: nn.Module) -> nn.Sequential:
    from lama_refine.models import is_block

    modules = list(generator.model)
    first = next(i for i, m in enumerate(modules) if is_block(m))
    return nn.Sequential(*modules[:first]).eval().requires_grad_(False).double()


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.parametrize("size", [(200, 72), (136, 40), (96, 24), (264, 16)])
def test_banded_front_equals_the_whole_front(size):
    from lama_refine.perf.tiling import BandedFront, band_front

    generator = build_generator(OmegaConf.load(DEFAULT_MODEL_PATH.with_suffix(".yaml")).generator)
    front = _front(generator)
    banded = band_front(front, rows=16)
    assert isinstance(banded, BandedFront) and len(banded) == len(front)
    x = torch.rand(1, 4, *size, dtype=torch.double)
    with torch.no_grad():
        expected, got = front(x), banded(x)
    for e, g in zip(expected, got, strict=True):
        assert e.shape == g.shape
        assert torch.allclose(e, g, atol=1e-12, rtol=0)


def test_a_front_with_a_fourier_branch_is_not_banded():
    from lama_refine.perf.tiling import band_front, local_geometry

    config = OmegaConf.load(DEFAULT_MODEL_PATH.with_suffix(".yaml")).generator
    config.init_conv_kwargs.ratio_gin, config.init_conv_kwargs.ratio_gout = 0.5, 0.5
    config.downsample_conv_kwargs.ratio_gin, config.downsample_conv_kwargs.ratio_gout = 0.5, 0.5
    front = _front(build_generator(config))
    assert local_geometry(list(front)) is None
    assert band_front(front, 16) is front


def test_float32_tail_bands_match_the_whole_tail_on_an_even_height():
    # bands grown to the image's row parity run oneDNN's transposed conv in the same phases
    # (bit-identical in our measurements; a small tolerance keeps the test independent of the CPU)
    generator = build_generator(OmegaConf.load(DEFAULT_MODEL_PATH.with_suffix(".yaml")).generator)
    modules = [m.eval().requires_grad_(False) for m in list(generator.model)[-6:]]
    whole, tiled = nn.Sequential(*modules), nn.Sequential(*tile_tail(modules, 64))
    torch.manual_seed(1)
    x = torch.rand(1, modules[0].in_channels, 96, 60, requires_grad=True)
    g = torch.rand(1, 3, 192, 120)
    (g_whole,) = torch.autograd.grad(whole(x), x, g)
    (g_tiled,) = torch.autograd.grad(tiled(x), x, g)
    assert (whole(x) - tiled(x)).abs().max() <= 1e-6
    assert (g_whole - g_tiled).abs().max() <= 1e-6


def _up(c_in: int, c_out: int, kernel: int, padding: int, output_padding: int) -> nn.ConvTranspose2d:
    torch.manual_seed(0)
    return (
        nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=padding, output_padding=output_padding)
        .double()
        .requires_grad_(False)
    )


@pytest.mark.slow  # seconds: full suite only
@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 6),
    rows=st.integers(1, 12),
    geometry=st.sampled_from([(3, 1, 1), (3, 1, 0), (4, 1, 0), (2, 0, 0), (5, 2, 1)]),
)
def test_banded_transposed_conv_equals_the_whole_in_value_and_input_gradient(h, w, rows, geometry):
    kernel, padding, output_padding = geometry
    up = _up(3, 2, kernel, padding, output_padding)
    x = torch.randn(2, 3, h, w, dtype=torch.double)
    expected = up(x)
    with torch.no_grad():
        got = banded_conv_transpose(x, up, rows)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-12, rtol=0)
    g = torch.randn_like(expected)
    leaf = x.clone().requires_grad_(True)
    (g_expected,) = torch.autograd.grad(up(leaf), leaf, g)
    g_got = banded_conv_transpose_grad(g, up, x.shape, rows)
    assert g_got.shape == x.shape and torch.allclose(g_got, g_expected, atol=1e-12, rtol=0)


def test_banded_transposed_conv_float32_matches_the_whole_on_an_even_height():
    # big-lama's upsampling geometry (k3 s2 p1 op1): bands grown to the image's row parity run
    # oneDNN in the same phases (bit-identical in our measurements; the tolerance keeps the test
    # independent of the CPU)
    torch.manual_seed(2)
    up = nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1).requires_grad_(False)
    x = torch.rand(1, 32, 48, 40)
    with torch.no_grad():
        assert (banded_conv_transpose(x, up, 16) - up(x)).abs().max() <= 1e-6
    g = torch.rand(1, 16, 96, 80)
    leaf = x.clone().requires_grad_(True)
    (g_whole,) = torch.autograd.grad(up(leaf), leaf, g)
    assert (banded_conv_transpose_grad(g, up, x.shape, 16) - g_whole).abs().max() <= 1e-6


def test_banded_transposed_conv_keeps_channels_last():
    up = _up(4, 2, 3, 1, 1).float()
    x = torch.rand(1, 4, 40, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = banded_conv_transpose(x, up, 8)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, up(x), atol=1e-6)


def test_a_transposed_conv_needing_gradients_runs_whole():
    up = _up(3, 2, 3, 1, 1)
    x = torch.randn(1, 3, 30, 4, dtype=torch.double, requires_grad=True)
    out = banded_conv_transpose(x, up, 4)
    assert out.grad_fn is not None and "Convolution" in type(out.grad_fn).__name__
