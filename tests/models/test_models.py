"""Generators: module tree, parameter names and outputs against the LaMa reference fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from lama_refine.models import (
    BIG_LAMA,
    GENERATOR_KINDS,
    GlobalGenerator,
    ResnetBlock,
    build_generator,
    generator_config,
    is_block,
)
from lama_refine.models.protocol import BLOCK_TYPES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ARCHITECTURES = ["big-lama", "lama-regular", "big-lama-regular"]
GOLDEN_CASES = sorted(p for p in (FIXTURES / "golden").iterdir() if p.is_dir()) + sorted(
    p for p in (FIXTURES / "golden-pix2pixhd").iterdir() if p.is_dir()
)
SMALL_PIX2PIXHD = {
    "kind": "pix2pixhd_global",
    "input_nc": 4,
    "output_nc": 3,
    "ngf": 8,
    "n_downsampling": 3,
    "n_blocks": 3,
    "conv_kind": "default",
    "add_out_act": "sigmoid",
}


def build_on_meta(name: str) -> nn.Module:
    """Build a fixture architecture without allocating or initialising its weights."""
    with torch.device("meta"):
        return build_generator(OmegaConf.load(FIXTURES / name / "config.yaml"))


def module_tree(module: nn.Module) -> dict:
    """The fixture's `tree` format, built from `_modules` so shared objects appear at every path."""
    node: dict = {"class": type(module).__name__}
    if module._modules:
        node["children"] = {name: module_tree(child) for name, child in module._modules.items()}
    return node


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_state_dict_names_shapes_dtypes_match_fixture(name: str) -> None:
    expected = json.loads((FIXTURES / name / "generator-state-dict.json").read_text())
    state = build_on_meta(name).state_dict()
    got = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in state.items()}
    assert list(got) == list(expected)
    assert got == expected


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_layout_matches_fixture(name: str) -> None:
    layout = json.loads((FIXTURES / name / "layout.json").read_text())
    generator = build_on_meta(name)
    model = generator.model
    assert len(model) == layout["n_modules"]
    assert [type(m).__name__ for m in model] == [e["class"] for e in layout["model"]]
    assert [is_block(m) for m in model] == [e["resnet_block"] for e in layout["model"]]
    first_block = next(i for i, m in enumerate(model) if is_block(m))
    assert first_block == layout["first_resnet_block_index"]
    assert sum(map(is_block, model)) == layout["n_resnet_blocks"]
    assert module_tree(generator) == layout["tree"]
    for entry in layout["model"]:
        if "same_object_as_index" in entry:
            assert model[entry["index"]] is model[entry["same_object_as_index"]]
    # No sharing beyond what the layout records, at the top level.
    same = {e["index"]: e.get("same_object_as_index") for e in layout["model"]}
    for i, module in enumerate(model):
        for j in range(i):
            if model[j] is module:
                assert same[i] is not None and model[same[i]] is model[j]


@pytest.mark.parametrize("name", ["lama-regular", "big-lama-regular"])
def test_pix2pixhd_shared_activation_paths(name: str) -> None:
    layout = json.loads((FIXTURES / name / "layout.json").read_text())
    generator = build_on_meta(name)
    groups = [[generator.get_submodule(p) for p in group["paths"]] for group in layout["shared_module_objects"]]
    for modules in groups:
        assert all(m is modules[0] for m in modules)
    assert groups[0][0] is not groups[1][0]
    paths_via_modules = sum(1 for _ in _walk_modules(generator))
    assert paths_via_modules == layout["n_module_paths_via__modules"]
    assert len(list(generator.named_modules())) - 1 == layout["n_named_modules_excluding_root"]


def _walk_modules(module: nn.Module):
    for child in module._modules.values():
        yield child
        yield from _walk_modules(child)


def test_big_lama_constant_is_the_fixture_generator_section() -> None:
    assert generator_config(BIG_LAMA) == generator_config(OmegaConf.load(FIXTURES / "big-lama" / "config.yaml"))


def test_registry() -> None:
    assert GENERATOR_KINDS["pix2pixhd_global"] is GlobalGenerator
    assert ResnetBlock in BLOCK_TYPES
    assert isinstance(build_generator(SMALL_PIX2PIXHD), GlobalGenerator)


def test_activations_are_not_shared_across_generators() -> None:
    a, b = build_generator(SMALL_PIX2PIXHD), build_generator(SMALL_PIX2PIXHD)
    assert a.model[3] is a.model[6] is a.model[13].conv_block[3]
    assert a.model[3] is not b.model[3]
    assert a.model[18] is a.model[21] and a.model[18] is not b.model[18]


@pytest.mark.parametrize("n_downsampling, n_blocks", [(2, 5), (3, 3), (1, 1)])
def test_pix2pixhd_index_rules(n_downsampling: int, n_blocks: int) -> None:
    generator = build_generator({**SMALL_PIX2PIXHD, "n_downsampling": n_downsampling, "n_blocks": n_blocks})
    model = generator.model
    assert len(model) == 7 + 6 * n_downsampling + n_blocks
    assert next(i for i, m in enumerate(model) if is_block(m)) == 4 + 3 * n_downsampling
    x = torch.rand(1, 4, 2**n_downsampling * 3, 2**n_downsampling * 5)
    assert generator.eval()(x).shape == (1, 3, *x.shape[-2:])


@pytest.mark.parametrize(
    "override, message",
    [
        ({"conv_kind": "depthwise"}, "conv_kind"),
        ({"some_new_knob": 1}, "some_new_knob"),
        ({"dilated_blocks_n": 2}, "dilated_blocks_n"),
        ({"ffc_positions": [1]}, "ffc_positions"),
        ({"padding_type": "circular"}, "padding_type"),
    ],
)
def test_pix2pixhd_rejects_unsupported_config(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_generator({**SMALL_PIX2PIXHD, **override})


def test_unknown_ffc_keyword_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no_such_option"):
        build_generator({**BIG_LAMA, "n_blocks": 1, "ngf": 4, "no_such_option": 1})


def plain_inference(generator: nn.Module, case: Path) -> np.ndarray:
    """Plain inference written out as LaMa's predict does it (kept inline on purpose)."""
    image = np.asarray(Image.open(case / "image.png").convert("RGB")).transpose(2, 0, 1).astype("float32") / 255
    mask = np.asarray(Image.open(case / "mask.png").convert("L"))[None].astype("float32") / 255
    height, width = mask.shape[-2:]
    pad = ((0, 0), (0, -height % 8), (0, -width % 8))
    image_t = torch.from_numpy(np.pad(image, pad, mode="symmetric"))[None]
    mask_t = (torch.from_numpy(np.pad(mask, pad, mode="symmetric"))[None] > 0).float()
    with torch.no_grad():
        pred = generator(torch.cat([image_t * (1 - mask_t), mask_t], dim=1))
    result = mask_t * pred + (1 - mask_t) * image_t
    return result[0].permute(1, 2, 0)[:height, :width].numpy()


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda p: p.name)
def test_plain_inference_matches_golden(case: Path) -> None:
    generator = build_generator(OmegaConf.load(case / "generator.yaml"))
    generator.load_state_dict(load_file(case / "generator.safetensors"), strict=True)
    generator.eval()
    expected = np.load(case / "plain.npy")
    got = plain_inference(generator, case)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_golden_pix2pixhd_layout_matches_meta() -> None:
    case = FIXTURES / "golden-pix2pixhd" / "odd_nonsquare_refine_fails"
    meta = json.loads((case / "meta.json").read_text())["generator"]
    generator = build_generator(OmegaConf.load(case / "generator.yaml"))
    assert len(generator.model) == meta["n_model_modules"]
    assert len(generator.state_dict()) == meta["n_state_dict_entries"]
    assert sum(p.numel() for p in generator.parameters()) == meta["n_parameters"]
    assert next(i for i, m in enumerate(generator.model) if is_block(m)) == meta["first_resnet_block_index"]
    for entry in meta["shared_module_objects_top_level"]:
        assert generator.model[entry["index"]] is generator.model[entry["same_object_as_index"]]
