"""A generator that is not LaMa's goes through refinement, the lean backward, the bands and the
memory estimate on its protocol answers alone: its own input convention (mask first, the hole
filled grey), a one-tensor front with its own feature name, its own trunk blocks with a lean
version, and its tail, each declared with the public register calls."""

import logging

import pytest
import torch
from torch import nn

from lama_refine.models import register_generator, register_handler
from lama_refine.models.protocol import (
    as_tuple,
    feature_names,
    feature_tensors,
    generator_input,
    map_tensors,
    spec_of,
    with_tensors,
)
from lama_refine.parts.downsample import AllPixelsMaskDownsampler, BlurMaskDownsampler, GaussianDownsampler
from lama_refine.parts.partition import BalancedPartitioner, EvenPartitioner, saved_activation_bytes
from lama_refine.parts.pyramid import OriginalPyramid
from lama_refine.parts.refine import L1Refiner, encode_level
from lama_refine.perf.lean import LeanConvNormAct, lean_module
from lama_refine.perf.memory import estimate_peak, trace_rear
from lama_refine.perf.switches import PerfConfig
from lama_refine.perf.tiling import BandedFront, TiledTail, find_tail
from lama_refine.pipeline import Inpainter, plain_inpaint


def mask_first_grey_hole(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Not LaMa's convention: the mask first, then the image with its hole filled mid-grey."""
    return torch.cat([mask, image * (1 - mask) + 0.5 * mask], dim=1)


class Mix(nn.Module):
    """A trunk block: x + conv(relu(bn(conv(x))))."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


class LeanMix(nn.Module):
    """Mix with its body made lean by the generic machinery."""

    def __init__(self, block: Mix):
        super().__init__()
        self.body = lean_module(block.body)

    def forward(self, x):
        return x + self.body(x)


class GreyNet(nn.Sequential):
    """(1, 4, H, W) mask + grey-filled image -> (1, 3, H, W); H, W even."""

    def __init__(self, width: int = 8, n_blocks: int = 4):
        super().__init__(
            nn.Conv2d(4, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            *[Mix(width) for _ in range(n_blocks)],
            nn.ConvTranspose2d(width, width, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(width, 3, 3),
            nn.Sigmoid(),
        )


class UntailedGreyNet(GreyNet):
    """The same network registered without a tail: it keeps its tail whole."""


register_generator(
    GreyNet, layers=None, blocks=(Mix,), front_emits=("coarse",), make_input=mask_first_grey_hole, tail=find_tail
)
register_generator(
    UntailedGreyNet, layers=None, blocks=(Mix,), front_emits=("coarse",), make_input=mask_first_grey_hole
)
register_handler("lean", Mix, LeanMix)


def make(cls: type = GreyNet) -> nn.Module:
    torch.manual_seed(0)
    net = cls()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval().requires_grad_(False)


def photo(h: int = 64, w: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    image = torch.rand(1, 3, h, w)
    mask = torch.zeros(1, 1, h, w)
    mask[..., h // 4 : h // 2 + 4, w // 3 : w // 2 + 6] = 1
    return image, mask


def inpainter(generator: nn.Module, **perf) -> Inpainter:
    ds = GaussianDownsampler()
    return Inpainter(
        generator=generator,
        pyramid=OriginalPyramid(ds, BlurMaskDownsampler(), min_side=32),
        refiner=L1Refiner(ds, AllPixelsMaskDownsampler(), n_iters=5, lr=0.01),
        partitioner=EvenPartitioner(),
        perf=PerfConfig(**perf),
    )


def test_the_generator_gets_its_own_input_convention():
    generator = make()
    image, mask = photo()
    assert torch.equal(generator_input(generator, image, mask), mask_first_grey_hole(image, mask))
    partition = EvenPartitioner().split(generator, [torch.device("cpu")])
    level = OriginalPyramid(GaussianDownsampler(), BlurMaskDownsampler(), min_side=64).build(image, mask)[-1]
    _, _, features = encode_level(partition, level, modulo=8)
    with torch.no_grad():
        assert torch.equal(features, partition.front(mask_first_grey_hole(image, mask)))
        lama_input = torch.cat([image * (1 - mask), mask], dim=1)
        assert not torch.equal(features, partition.front(lama_input))
        expected = generator(mask_first_grey_hole(image, mask))
    plain = plain_inpaint(generator, image, mask)
    assert torch.equal(plain, mask * expected + (1 - mask) * image)


def test_the_front_names_its_features_and_the_refiner_optimises_them_by_that_name():
    generator = make()
    image, mask = photo()
    assert spec_of(generator).front_emits == ("coarse",)
    assert "coarse" in L1Refiner.optimize_choices()
    levels = OriginalPyramid(GaussianDownsampler(), BlurMaskDownsampler(), min_side=32).build(image, mask)
    partition = EvenPartitioner().split(generator, [torch.device("cpu")])
    by_name = L1Refiner(GaussianDownsampler(), AllPixelsMaskDownsampler(), n_iters=3, optimize="coarse")
    both = L1Refiner(GaussianDownsampler(), AllPixelsMaskDownsampler(), n_iters=3)
    assert torch.equal(by_name.refine(partition, levels).image, both.refine(partition, levels).image)
    other = L1Refiner(GaussianDownsampler(), AllPixelsMaskDownsampler(), n_iters=3, optimize="global")
    with pytest.raises(ValueError, match=r"none of the front's features \['coarse'\]"):
        other.refine(partition, levels)


def test_refinement_runs_lean_and_in_bands_with_the_numbers_of_plain_autograd():
    image, mask = photo()
    tuned = inpainter(make(), tile_rows=8)
    assert isinstance(tuned.partition.front.module, BandedFront)
    last = list(tuned.partition.rear[-1].module)
    assert isinstance(last[-1], TiledTail)
    assert sum(isinstance(m, LeanMix) for m in last) == 4
    assert any(isinstance(m, LeanConvNormAct) for m in tuned.partition.rear[-1].module.modules())
    result = tuned.run(image, mask)
    untuned = inpainter(make(), lean_backward=False, tile_rows=None)
    assert not any(isinstance(m, (LeanMix, TiledTail)) for m in untuned.partition.rear[-1].module.modules())
    plain = untuned.run(image, mask)
    known = mask.expand_as(image) == 0
    assert torch.equal(result.image[known], image[known]) and torch.isfinite(result.image).all()
    assert len(result.losses) == 2 and len(result.losses[1]) == 5
    assert (result.image - plain.image).abs().max() < 1e-5
    assert result.losses[1] == pytest.approx(plain.losses[1], rel=1e-5)


def test_a_generator_without_a_registered_tail_keeps_it_whole_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="lama_refine.models.protocol"):
        tuned = inpainter(make(UntailedGreyNet), tile_rows=8)
        last = list(tuned.partition.rear[-1].module)
    assert not any(isinstance(m, TiledTail) for m in last)
    assert "UntailedGreyNet has no tail to run in bands" in caplog.text


def test_the_memory_estimate_and_the_balanced_split_trace_it():
    generator = make()
    costs = saved_activation_bytes(generator, probe_size=32)
    assert len(costs) == len(generator) - 5 and all(c > 0 for c in costs[:4])
    lean, _ = trace_rear(generator, (64, 96), PerfConfig())
    plain, _ = trace_rear(generator, (64, 96), PerfConfig(lean_backward=False))
    assert 0 < lean < plain
    assert estimate_peak(generator, (64, 96)).total > estimate_peak(generator, (32, 48)).total
    split = BalancedPartitioner().split(generator, [torch.device("cpu")] * 2)
    assert sum(len(s.module) for s in split.rear) == len(generator) - 5
    assert split.spec is spec_of(generator)


def test_empty_branches_have_one_representation():
    a, b = torch.ones(1, 2, 3, 3), torch.zeros(1, 1, 3, 3)
    assert feature_tensors((a, 0)) == [a] and feature_tensors(a) == [a]
    assert feature_names((a, 0), ("x", "y")) == ["x"] and feature_names((0, a), ("x", "y")) == ["y"]
    assert feature_names(a) == ["features"] and feature_names((a, b)) == ["features0", "features1"]
    assert with_tensors((a, 0), [b]) == (b, 0) and with_tensors(a, [b]) is b
    assert map_tensors(lambda t: t + 1, (a, 0))[1] == 0 and as_tuple(a) == (a,)
