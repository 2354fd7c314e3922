"""region=crop: grouping holes, crop boxes, pasting back, and the Inpainter path."""

import pytest
import torch
from conftest import GOLDEN, Case

from lama_refine.config import build_inpainter, compose
from lama_refine.region import Box, CropConfig, coarse_components, hole_groups, inpaint_crops, with_context


def mask_with(shape, *boxes):
    mask = torch.zeros(1, 1, *shape)
    for top, left, bottom, right in boxes:
        mask[..., top:bottom, left:right] = 1
    return mask


def test_distant_holes_are_separate_groups_with_their_own_crops():
    mask = mask_with((1000, 1500), (100, 100, 140, 150), (800, 1300, 850, 1360))
    groups = hole_groups(mask, CropConfig(margin=128))
    assert [hole for hole, _ in groups] == [Box(100, 100, 140, 150), Box(800, 1300, 850, 1360)]
    first_crop = groups[0][1]
    assert first_crop.top == 0 and first_crop.left == 0  # clipped at the border
    assert first_crop.bottom >= 140 + 128 and first_crop.right >= 150 + 128
    assert not groups[0][1].overlaps(groups[1][1])


def test_holes_whose_context_overlaps_are_one_group():
    mask = mask_with((1000, 1500), (400, 400, 420, 420), (400, 600, 420, 620))  # 180 px apart
    groups = hole_groups(mask, CropConfig(margin=128))
    assert len(groups) == 1 and groups[0][0] == Box(400, 400, 420, 620)


def test_margin_grows_with_the_hole_and_crop_is_a_multiple_of_modulo():
    hole = Box(400, 400, 600, 701)  # 200 x 301: margin 301 on every side
    crop = with_context(hole, (2000, 2000), CropConfig(margin=128, margin_factor=1.0), modulo=8)
    assert crop.top <= 400 - 301 and crop.bottom >= 600 + 301 and crop.left <= 400 - 301
    assert crop.right >= 701 + 301
    assert crop.height % 8 == 0 and crop.width % 8 == 0


def test_diagonal_strokes_are_one_component():
    mask = torch.zeros(200, 200)
    for i in range(200):
        mask[i, i] = 1
    assert len(coarse_components(mask, cell=16)) == 1


def test_only_hole_pixels_inside_crops_are_pasted():
    image = torch.rand(1, 3, 64, 80)
    mask = mask_with((64, 80), (10, 10, 20, 30))[0:1]
    crop = Box(0, 0, 40, 48)
    out = inpaint_crops(lambda img, msk: torch.full_like(img, 7.0), image, mask, [crop])
    hole = mask.expand_as(image) > 0
    assert (out[hole] == 7).all()
    assert torch.equal(out[~hole], image[~hole])


CASE = Case(GOLDEN / "three_scales")


def inpainter(*overrides):
    cfg = compose(
        [
            f"model.path={CASE.path / 'generator.safetensors'}",
            "indir=x",
            "outdir=y",
            "progress=false",
            *CASE.overrides(),
            *overrides,
        ]
    )
    return build_inpainter(cfg)


def test_crop_of_a_small_hole_keeps_everything_but_the_hole():
    image = CASE.image()
    h, w = image.shape[-2:]
    mask = mask_with((h, w), (h // 2, w // 2, h // 2 + 12, w // 2 + 16))
    result = inpainter("region=crop", "crop.margin=40", "crop.margin_factor=0").run(image, mask)
    hole = mask.expand_as(image) > 0
    assert torch.equal(result.image[~hole], image[~hole])
    assert torch.isfinite(result.image).all() and not torch.equal(result.image[hole], image[hole])


@pytest.mark.slow  # seconds: full suite only
def test_crop_covering_the_whole_photo_equals_whole_image_refinement():
    image, mask = CASE.image(), CASE.mask()
    whole = inpainter().run(image, mask)
    crop = inpainter("region=crop").run(image, mask)
    groups = hole_groups(mask, CropConfig())
    assert [c for _, c in groups] == [Box(0, 0, *image.shape[-2:])]
    assert (crop.image - whole.image).abs().max() <= 1e-6
    assert crop.losses == whole.losses


def test_no_hole_means_no_work():
    image = CASE.image()
    result = inpainter("region=crop").run(image, torch.zeros_like(image[:, :1]))
    assert torch.equal(result.image, image) and result.losses == []


def test_unknown_region_is_an_error():
    with pytest.raises(ValueError, match="region"):
        inpainter("region=everywhere")
