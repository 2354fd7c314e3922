"""The lean frozen-weight backward: autograd's numbers, a fraction of what autograd keeps."""

import pytest
import torch
from torch import nn

from lama_refine.models import BIG_LAMA, build_generator
from lama_refine.models.lama.lean_blocks import LeanFFCResnetBlock, LeanResidual
from lama_refine.parts.partition import EvenPartitioner
from lama_refine.perf import lean
from lama_refine.perf.lean import (
    ConvSpec,
    FrozenConv,
    FrozenNormAct,
    LeanConvNormAct,
    band_upsampling,
    lean_rear,
    mul_unpacked_,
    norm_inplace,
    pack_mask,
    pack_positive,
    unpack_mask,
)


def randomise_norms(generator: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial eval BatchNorm statistics, so the scale in the backward matters."""
    gen = torch.Generator().manual_seed(seed)
    for m in generator.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)
    return generator.eval().requires_grad_(False)


def small_ffc(**overrides) -> nn.Module:
    cfg = {**BIG_LAMA, "ngf": 8, "n_blocks": 2, **overrides}
    torch.manual_seed(0)
    return randomise_norms(build_generator(cfg))


def small_pix2pixhd() -> nn.Module:
    torch.manual_seed(0)
    return randomise_norms(
        build_generator(
            {
                "kind": "pix2pixhd_global",
                "input_nc": 4,
                "output_nc": 3,
                "ngf": 8,
                "n_downsampling": 2,
                "n_blocks": 2,
                "add_out_act": "sigmoid",
            }
        )
    )


def rear_and_features(generator: nn.Module, size=(32, 48), dtype=torch.float64):
    generator = generator.to(dtype)
    partition = EvenPartitioner().split(generator, [torch.device("cpu")])
    x = torch.rand(1, 4, *size, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = partition.front(x)
    return partition.rear[0].module, features


def leaves_of(features):
    if isinstance(features, tuple):
        return [f.detach().clone().requires_grad_(True) for f in features]
    return [features.detach().clone().requires_grad_(True)]


def as_features(template, leaves):
    return tuple(leaves) if isinstance(template, tuple) else leaves[0]


# LaMa's local Fourier unit splits both sides by h // 2: square inputs only.
GENERATORS = {
    "big-lama-shaped": (lambda: small_ffc(), (32, 48)),
    "ffc-with-lfu": (
        lambda: small_ffc(resnet_conv_kwargs={"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": True}),
        (48, 48),
    ),
    "pix2pixhd": (small_pix2pixhd, (20, 28)),
}


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_lean_rear_equals_autograd_in_double_precision(name):
    make, size = GENERATORS[name]
    rear, features = rear_and_features(make(), size)
    lean = lean_rear(rear)
    plain_leaves, lean_leaves = leaves_of(features), leaves_of(features)
    out = rear(as_features(features, plain_leaves))
    out_lean = lean(as_features(features, lean_leaves))
    assert torch.equal(out, out_lean)  # the forward runs the same ops
    grad_out = torch.randn_like(out)
    expected = torch.autograd.grad(out, plain_leaves, grad_out)
    got = torch.autograd.grad(out_lean, lean_leaves, grad_out)
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # seconds: full suite only
def test_lean_rear_float32_gradients_within_1e5_of_autograd():
    rear, features = rear_and_features(small_ffc(), size=(64, 80), dtype=torch.float32)
    lean = lean_rear(rear)
    a, b = leaves_of(features), leaves_of(features)
    out, out_lean = rear(tuple(a)), lean(tuple(b))
    assert torch.equal(out, out_lean)
    grad_out = torch.randn_like(out)
    for e, g in zip(torch.autograd.grad(out, a, grad_out), torch.autograd.grad(out_lean, b, grad_out), strict=True):
        assert (g - e).abs().max() <= 1e-5 * e.abs().max()


def saved_activation_bytes(module: nn.Module, features) -> dict[torch.dtype, int]:
    """Bytes autograd keeps for backward, by dtype, parameters excluded."""
    saved: dict[torch.dtype, int] = {}

    def pack(t):
        if not isinstance(t, nn.Parameter):
            saved[t.dtype] = saved.get(t.dtype, 0) + t.nbytes
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(as_features(features, leaves_of(features)))
    return saved


@pytest.mark.slow  # seconds: full suite only
def test_lean_rear_keeps_only_bit_masks_and_the_output_activation():
    rear, features = rear_and_features(small_ffc(ngf=16), size=(64, 96), dtype=torch.float32)
    plain = saved_activation_bytes(rear, features)
    lean = saved_activation_bytes(lean_rear(rear), features)
    output_bytes = 3 * 64 * 96 * 4  # the sigmoid keeps its output
    assert set(lean) <= {torch.uint8, torch.float32}
    assert lean.get(torch.float32, 0) == output_bytes
    assert sum(lean.values()) * 10 < sum(plain.values())


def test_lean_modules_share_the_original_parameters():
    generator = small_ffc()
    rear, _ = rear_and_features(generator, dtype=torch.float32)
    lean = lean_rear(rear)
    originals = {id(p) for p in rear.parameters()}
    assert {id(p) for p in lean.parameters()} <= originals
    assert any(isinstance(m, LeanFFCResnetBlock) for m in lean.modules())
    assert isinstance(lean_rear(rear_and_features(small_pix2pixhd())[0])[0], LeanResidual)


def test_unknown_and_unsupported_modules_fall_back_to_autograd():
    class Custom(nn.Module):
        def forward(self, x):
            return x * 2

    trainable = nn.Conv2d(2, 2, 3, padding=1)  # weights that need gradients: not frozen
    seq = nn.Sequential(Custom(), trainable, nn.BatchNorm2d(2).train())
    lean = lean_rear(seq)
    assert lean[0] is seq[0] and lean[1] is trainable and lean[2] is seq[2]


@pytest.mark.parametrize("shape,channels_last", [((1, 3, 5, 7), False), ((2, 4, 3, 3), True), ((1, 1, 1, 9), False)])
def test_mask_packing_round_trips(shape, channels_last):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.5
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    stored = mask.contiguous(memory_format=fmt)
    packed = pack_mask(stored)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
    unpacked = unpack_mask(packed, mask.shape)
    assert unpacked.dtype == torch.bool and torch.equal(unpacked, mask)


@pytest.mark.parametrize(
    "conv,pad",
    [
        (nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), None),
        (nn.Conv2d(3, 4, 3, stride=2, padding=1), None),
        (nn.Conv2d(3, 4, 7), nn.ReflectionPad2d(3)),
        (nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), None),
    ],
)
@pytest.mark.slow  # seconds: full suite only
def test_frozen_conv_passes_gradcheck(conv, pad):
    conv = conv.double().requires_grad_(False)
    spec = ConvSpec(conv, tuple(pad.padding) if pad is not None else None)
    x = torch.rand(1, 3, 9, 10, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: FrozenConv.apply(t, spec), (x,))


@pytest.mark.parametrize("with_norm,relu", [(True, True), (True, False), (False, True)])
def test_frozen_norm_act_passes_gradcheck(with_norm, relu):
    norm = randomise_norms(nn.BatchNorm2d(3)).double() if with_norm else None
    x = torch.randn(1, 3, 6, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: FrozenNormAct.apply(t, norm, relu), (x,))


@pytest.mark.parametrize("n", [7, 64, 200, 203])
def test_chunked_packing_equals_whole_packing(monkeypatch, n):
    monkeypatch.setattr(lean, "PACK_CHUNK", 64)  # a multiple of 8: every chunk is whole bytes
    y = torch.randn(1, 1, 1, n, generator=torch.Generator().manual_seed(n))
    packed = pack_positive(y)
    assert torch.equal(packed, pack_mask(y > 0))
    grad = torch.randn(1, 1, 1, n, dtype=torch.double)
    assert torch.equal(mul_unpacked_(grad.clone(), packed), grad * (y > 0))


def test_norm_inplace_is_the_norms_own_output_written_over_its_input():
    norm = randomise_norms(nn.BatchNorm2d(4)).eval()
    x = torch.randn(2, 4, 5, 6)
    expected = norm(x)
    out = norm_inplace(norm, x)
    assert out is x and torch.equal(out, expected)
    half = torch.randn(2, 4, 5, 6, dtype=torch.bfloat16)  # not the norm's dtype: a new tensor
    assert norm_inplace(norm, half) is not half


def test_conv_norm_act_in_place_keeps_autograds_gradient():
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1).double().requires_grad_(False)
    norm = randomise_norms(nn.BatchNorm2d(4)).double()
    lean_module = LeanConvNormAct(conv, norm, relu=True)
    x = torch.randn(1, 3, 7, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lean_module, (x,))
    reference = torch.relu(norm(conv(x)))
    assert torch.equal(lean_module(x), reference)


@pytest.mark.slow  # seconds: full suite only
def test_banded_upsampling_keeps_the_rear_and_its_gradient():
    """perf.tile_rows bands the lean rear's transposed convs (forward and input gradient)."""
    generator = randomise_norms(small_ffc())
    rear, features = rear_and_features(generator, size=(64, 48))
    lean_whole, lean_banded = lean_rear(rear), lean_rear(rear)
    band_upsampling(lean_banded, 8)
    specs = [m.spec for m in lean_banded.modules() if isinstance(getattr(m, "spec", None), ConvSpec)]
    assert any(s.transposed and s.band_rows == 8 for s in specs)
    assert all(s.band_rows is None for s in specs if not s.transposed)
    leaves = leaves_of(features)
    out_whole, out_banded = lean_whole(as_features(features, leaves)), lean_banded(as_features(features, leaves))
    assert torch.allclose(out_banded, out_whole, atol=1e-12, rtol=0)
    g = torch.randn_like(out_whole)
    expected = torch.autograd.grad(out_whole, leaves, g)
    got = torch.autograd.grad(out_banded, leaves, g)
    assert all(torch.allclose(a, b, atol=1e-12, rtol=0) for a, b in zip(got, expected, strict=True))
