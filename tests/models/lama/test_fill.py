"""models/fill.py: the classical diffusion fill and the generator's optional input-fill layer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lama_refine.models import BIG_LAMA, build_generator
from lama_refine.models.lama.fill import DiffusionInputFill, diffusion_fill
from lama_refine.parts.partition import EvenPartitioner
from lama_refine.perf.tiling import band_front

SMALL = {**BIG_LAMA, "ngf": 8, "n_downsampling": 2, "n_blocks": 2}


def random_case(seed: int, shape=(2, 3, 40, 56)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(shape, generator=g)
    mask = torch.zeros(shape[0], 1, *shape[2:])
    mask[:, :, 10:25, 12:40] = 1
    mask[:, :, 30:33, :] = (torch.rand(shape[0], 1, 3, shape[3], generator=g) > 0.3).float()
    return image, mask


@pytest.mark.slow  # seconds: full suite only
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), iters=st.integers(0, 30))
def test_known_pixels_kept_and_fill_within_known_range(seed: int, iters: int) -> None:
    """Blurring and averaging never leave the range of the known values (a maximum principle)."""
    image, mask = random_case(seed)
    out = diffusion_fill(image, mask, iters)
    known = mask.expand_as(image) == 0
    assert torch.equal(out[known], image[known])
    for b in range(image.shape[0]):
        lo, hi = image[b][known[b]].min(), image[b][known[b]].max()
        assert out[b].min() >= lo - 1e-6 and out[b].max() <= hi + 1e-6


@pytest.mark.slow  # seconds: full suite only
def test_ignores_the_hole_pixels_of_its_input() -> None:
    image, mask = random_case(0)
    scrambled = image * (1 - mask) + torch.rand_like(image) * mask
    assert torch.allclose(diffusion_fill(image, mask), diffusion_fill(scrambled, mask), atol=1e-6)


@pytest.mark.slow  # seconds: full suite only
def test_a_smooth_image_is_recovered_closely() -> None:
    """A linear ramp is a steady state of the heat equation: the fill comes close to it."""
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 48, 64).contiguous()
    mask = torch.zeros(1, 1, 48, 64)
    mask[..., 16:32, 20:44] = 1
    err = ((diffusion_fill(ramp, mask, 60) - ramp).abs() * mask).sum() / (3 * mask.sum())
    assert err < 0.01  # a mean fill is off by about 0.2 here


@pytest.mark.slow  # seconds: full suite only
def test_input_layer_fills_only_the_image_channels() -> None:
    image, mask = random_case(3)
    x = torch.cat([image * (1 - mask), mask], dim=1)
    y = DiffusionInputFill(iters=20)(x)
    assert torch.equal(y[:, -1:], mask)
    assert torch.allclose(y[:, :-1], diffusion_fill(image, mask, 20), atol=1e-6)


@pytest.mark.slow  # seconds: full suite only
def test_generator_option_keeps_lama_parameter_names_and_layout() -> None:
    plain, filled = build_generator(SMALL), build_generator({**SMALL, "input_fill": "diffusion"})
    assert list(plain.state_dict()) == list(filled.state_dict())
    assert len(plain.model) == len(filled.model)
    filled.load_state_dict(plain.state_dict())  # a LaMa-layout checkpoint loads into either
    plain.eval(), filled.eval()
    image, mask = random_case(5, (1, 3, 40, 48))
    x = torch.cat([image * (1 - mask), mask], dim=1)
    with torch.no_grad():
        assert torch.allclose(filled(x), plain(DiffusionInputFill()(x)), atol=1e-6)


def test_unknown_input_fill_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="input_fill"):
        build_generator({**SMALL, "input_fill": "telea"})


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.parametrize("size", [(200, 72), (136, 40)])
def test_banded_front_fills_the_whole_image_then_bands(size) -> None:
    """The fill is global: `perf.tile_rows` must run it once on the whole input, then band."""
    from lama_refine.perf.tiling import BandedFront

    generator = build_generator({**SMALL, "input_fill": "diffusion"}).eval().requires_grad_(False).double()
    front = EvenPartitioner().split(generator, [torch.device("cpu")]).front.module
    banded = band_front(front, 16)
    assert isinstance(banded, BandedFront) and banded.global_head and len(banded) == len(front)
    image, mask = random_case(4, (1, 3, *size))
    x = torch.cat([image * (1 - mask), mask], dim=1).double()
    with torch.no_grad():
        for e, g in zip(front(x), banded(x), strict=True):
            assert e.shape == g.shape and torch.allclose(e, g, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "overrides", [[], ["perf.tile_rows=16", "perf.lean_backward=false"]], ids=["default", "tiled-faithful"]
)
@pytest.mark.slow  # seconds: full suite only
def test_refinement_runs_on_an_input_fill_generator(overrides: list[str]) -> None:
    """The fill is recomputed by the front at every scale; refinement and tiling run unchanged."""
    from lama_refine.app.api import make_inpainter

    torch.manual_seed(0)
    generator = build_generator({**SMALL, "input_fill": "diffusion"}).eval()
    inpainter = make_inpainter(
        ["refine=true", "refiner.n_iters=2", "pyramid.min_side=24", *overrides], generator=generator
    )
    image = torch.rand(1, 3, 96, 120)
    mask = torch.zeros(1, 1, 96, 120)
    mask[..., 30:70, 40:90] = 1
    result = inpainter.run(image, mask)
    assert result.image.shape == image.shape and len(result.losses) >= 1
    known = mask.expand_as(image) == 0
    assert torch.allclose(result.image[known], image[known])
    assert torch.isfinite(result.image).all()
