"""`lama_refine.inpaint`: images in memory, PIL or numpy, in and out."""
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lama_refine.api as api
from lama_refine import inpaint, make_inpainter
from lama_refine.errors import UserError

from conftest import GOLDEN

REPO = Path(__file__).resolve().parents[1]
MODEL = GOLDEN / "three_scales" / "generator.safetensors"
FAST = [f"model.path={MODEL}", "refine=false", "progress=false"]


def picture(h=36, w=52, seed=0):
    rng = np.random.default_rng(seed)
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    holes = np.zeros((h, w), bool)
    holes[8:20, 10:30] = True
    return image, holes


def test_pil_in_pil_out_with_the_known_pixels_unchanged():
    image, holes = picture()
    out = inpaint(Image.fromarray(image), Image.fromarray(holes.astype(np.uint8) * 255), FAST)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (52, 36)
    out = np.asarray(out)
    assert np.array_equal(out[~holes], image[~holes])
    assert (out[holes] != image[holes]).any()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_any_pil_mode_pillow_converts_to_rgb(mode):
    image, holes = picture()
    pil = Image.fromarray(image)
    pil = pil.convert("L").convert("I;16") if mode == "I;16" else pil.convert(mode)
    out = inpaint(pil, Image.fromarray(holes), FAST)  # a mode "1" mask too
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == pil.size


def test_uint8_array_and_the_same_as_pil():
    image, holes = picture()
    out = inpaint(image, holes, FAST)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out, np.asarray(inpaint(Image.fromarray(image), Image.fromarray(holes), FAST)))
    uint8_mask = inpaint(image, holes.astype(np.uint8) * 7, FAST)  # any non-zero value is a hole
    assert np.array_equal(out, uint8_mask)


def test_float_array_gives_float32_in_0_1_and_keeps_known_values_exactly():
    image, holes = picture()
    floats = image.astype(np.float64) / 255
    out = inpaint(floats, holes, FAST)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.array_equal(out[~holes], floats.astype(np.float32)[~holes])
    assert out.min() >= 0 and out.max() <= 1
    # the same numbers the file path gives: the pipeline sees image / 255 either way
    assert np.abs(np.clip(out * 255, 0, 255).astype(np.uint8).astype(int) - inpaint(image, holes, FAST).astype(int)).max() == 0


def test_an_empty_mask_returns_the_image_without_building_a_pipeline(monkeypatch):
    monkeypatch.setattr(api, "make_inpainter", lambda *a, **k: pytest.fail("no pipeline needed"))
    image, _ = picture()
    assert np.array_equal(inpaint(image, np.zeros(image.shape[:2], bool)), image)


def test_the_pipeline_is_built_once_for_a_loop(monkeypatch):
    built = []
    real = api.make_inpainter
    monkeypatch.setattr(api, "_last_built", None)
    monkeypatch.setattr(api, "make_inpainter", lambda overrides: built.append(overrides) or real(overrides))
    for seed in range(3):
        inpaint(*picture(seed=seed), FAST)
    assert len(built) == 1
    inpainter = real(FAST)
    for seed in range(2):
        inpaint(*picture(seed=seed), inpainter=inpainter)  # an explicit pipeline: nothing built
    assert len(built) == 1


def test_refined_by_default_overrides_as_on_the_command_line():
    image, holes = picture(64, 80)
    refined = inpaint(image, holes, [f"model.path={MODEL}", "progress=false", "refiner.n_iters=2", "pyramid=fixed"])
    plain = inpaint(image, holes, FAST)
    assert refined.shape == plain.shape and np.array_equal(refined[~holes], image[~holes])


@pytest.mark.parametrize("image, mask, says", [
    (np.zeros((10, 12, 3), np.uint8), np.zeros((10, 11), bool), "mask is 10x11 but the image is 10x12"),
    (np.zeros((10, 12), np.uint8), np.zeros((10, 12), bool), "HxWx3"),
    (np.full((10, 12, 3), 2.0), np.ones((10, 12), bool), "[0, 1]"),
    (np.zeros((10, 12, 3), np.uint8), np.zeros((2, 10, 12), bool), "HxW array"),
])
def test_wrong_inputs_are_user_errors(image, mask, says):
    with pytest.raises(UserError, match=re.escape(says)):
        inpaint(image, mask, FAST)


def test_a_typo_in_overrides_names_the_key():
    image, holes = picture()
    with pytest.raises(UserError, match="did you mean refiner.n_iters"):
        inpaint(image, holes, ["refiner.n_iter=3"])


def readme_python_snippet() -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    snippet = next(b for b in blocks if "inpaint(" in b and "import inpaint" in b)
    assert len(snippet.strip().splitlines()) <= 3
    return snippet


@pytest.mark.slow
def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    exec(compile(readme_python_snippet(), "README.md", "exec"), {})
    outputs = [p for p in tmp_path.iterdir() if p.suffix == ".png"]
    assert len(outputs) == 1
    out = np.asarray(Image.open(outputs[0]))
    source = np.asarray(Image.open(REPO / "examples" / "ladybird.jpg").convert("RGB"))
    holes = np.asarray(Image.open(REPO / "examples" / "ladybird_mask.png").convert("L")) > 0
    assert out.shape == source.shape and np.array_equal(out[~holes], source[~holes])
