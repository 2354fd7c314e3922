"""The shipped demo model: it loads, it is trained, and its output does not drift.

Fixtures: tests/fixtures/default-model/ (made by tools/make_default_model_fixture.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors import safe_open

from lama_refine.models import build_generator, generator_config
from lama_refine.models.loading import load_generator
from lama_refine.pipeline import plain_inpaint
from lama_refine.weights import DEFAULT_CONFIG_PATH, DEFAULT_MODEL_PATH

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "default-model"
EXAMPLES = ROOT / "examples"


def hole_l1(pred: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> float:
    weight = mask.expand_as(pred)
    return float(((pred - image).abs() * weight).sum() / weight.sum())


@pytest.fixture(scope="module")
def generator() -> torch.nn.Module:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_generator(DEFAULT_MODEL_PATH).generator


@pytest.fixture(scope="module")
def case() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    image = np.asarray(Image.open(FIXTURE / "image.png").convert("RGB"), dtype=np.float32) / 255
    mask = (np.asarray(Image.open(FIXTURE / "mask.png")) > 0).astype(np.float32)
    return (
        torch.from_numpy(image).permute(2, 0, 1)[None],
        torch.from_numpy(mask)[None, None],
        np.load(FIXTURE / "plain.npy"),
    )


def test_shipped_files_are_small_and_describe_an_ffc_generator() -> None:
    assert DEFAULT_MODEL_PATH.exists() and DEFAULT_CONFIG_PATH.exists()
    assert DEFAULT_MODEL_PATH.stat().st_size <= 20 * 1024 * 1024
    section = generator_config(OmegaConf.load(DEFAULT_CONFIG_PATH))
    assert section["kind"] == "ffc_resnet"
    assert section["add_out_act"] == "sigmoid"
    assert section["resnet_conv_kwargs"]["ratio_gin"] == 0.75
    with safe_open(str(DEFAULT_MODEL_PATH), "pt") as f:
        keys = set(f.keys())
        assert all(f.get_tensor(k).dtype in (torch.float16, torch.int64) for k in keys)
    assert set(build_generator(section).state_dict()) == keys  # BN statistics shipped too


def test_loads_through_the_project_loader(generator: torch.nn.Module) -> None:
    """`load_generator` (the CLI's path) reads the .safetensors + same-stem .yaml pair."""
    model = load_generator(DEFAULT_MODEL_PATH).generator
    reference = generator.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value.float(), reference[key].float()), key


@pytest.mark.slow  # seconds: full suite only
def test_plain_output_matches_the_stored_reference(generator, case) -> None:
    image, mask, expected = case
    out = plain_inpaint(generator, image, mask)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)


@pytest.mark.slow  # seconds: full suite only
def test_is_a_trained_network(generator, case) -> None:
    """Clearly better than the same network freshly initialised, on the held-out crop."""
    image, mask, _ = case
    trained = hole_l1(plain_inpaint(generator, image, mask), image, mask)
    torch.manual_seed(0)
    untrained_net = build_generator(OmegaConf.load(DEFAULT_CONFIG_PATH)).eval()
    untrained = hole_l1(plain_inpaint(untrained_net, image, mask), image, mask)
    assert trained < 0.6 * untrained, (trained, untrained)
    meta = json.loads((FIXTURE / "meta.json").read_text())
    assert trained == pytest.approx(meta["trained_hole_l1"], abs=1e-4)


def test_examples_are_complete() -> None:
    """Every example photo has a same-named 8-bit mask with a hole, and is 1-2 K px."""
    photos = sorted(EXAMPLES.glob("*.jpg"))
    assert 2 <= len(photos) <= 3
    for photo in photos:
        mask_path = EXAMPLES / f"{photo.stem}_mask.png"
        with Image.open(photo) as image, Image.open(mask_path) as mask:
            assert mask.mode == "L" and mask.size == image.size
            assert 1000 <= max(image.size) <= 2048
            values = np.unique(np.asarray(mask))
            assert set(values.tolist()) <= {0, 255} and 255 in values


def test_readme_strip_zooms_where_the_hole_is_and_refinement_changed_most():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_readme_strip", ROOT / "tools" / "make_readme_strip.py")
    strip = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(strip)
    mask = np.zeros((100, 200), bool)
    mask[10:40, 20:60] = mask[60:90, 120:180] = True  # two holes
    plain = np.zeros((100, 200, 3), np.uint8)
    refined = plain.copy()
    refined[70:80, 130:140] = 50  # refinement changed the second hole only
    left, top, right, bottom = strip.zoom_box(mask, plain, refined, (40, 30))
    assert (right - left, bottom - top) == (40, 30)  # 1:1 pixels: the panel's size
    assert left <= 130 and right >= 140 and top <= 70 and bottom >= 80
    assert strip.zoom_box(mask, plain, refined, (400, 300)) == (0, 0, 200, 100)  # never outside the photo
