"""`lama_refine.inpaint`: images in memory, PIL or numpy, in and out."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN
from PIL import Image

import lama_refine.app.api as api
from lama_refine import inpaint
from lama_refine.errors import UserError

REPO = Path(__file__).resolve().parents[2]
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
    assert (
        np.abs(np.clip(out * 255, 0, 255).astype(np.uint8).astype(int) - inpaint(image, holes, FAST).astype(int)).max()
        == 0
    )


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


@pytest.mark.parametrize(
    "image, mask, says",
    [
        (np.zeros((10, 12, 3), np.uint8), np.zeros((10, 11), bool), "mask is 10x11 but the image is 10x12"),
        (np.zeros((10, 12), np.uint8), np.zeros((10, 12), bool), "HxWx3"),
        (np.full((10, 12, 3), 2.0), np.ones((10, 12), bool), "[0, 1]"),
        (np.zeros((10, 12, 3), np.uint8), np.zeros((2, 10, 12), bool), "HxW array"),
    ],
)
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


# ---------------------------------------------------------------------------------------------
# inpaint() as people call it (issue 24)
# ---------------------------------------------------------------------------------------------


def test_paths_are_read_as_the_command_line_reads_them(tmp_path):
    image, holes = picture()
    Image.fromarray(image).save(tmp_path / "p.png")
    Image.fromarray(holes.astype(np.uint8) * 255).save(tmp_path / "p_mask.png")
    from_paths = inpaint(str(tmp_path / "p.png"), tmp_path / "p_mask.png", FAST)
    assert isinstance(from_paths, Image.Image) and from_paths.size == (52, 36)
    assert np.array_equal(np.asarray(from_paths), inpaint(image, holes, FAST))
    with pytest.raises(UserError, match="image: .*nope.png: no such file"):
        inpaint(str(tmp_path / "nope.png"), holes, FAST)
    with pytest.raises(UserError, match="mask: .*nope_mask.png: no such file"):
        inpaint(image, tmp_path / "nope_mask.png", FAST)


@pytest.mark.parametrize(
    "overrides",
    [
        tuple(FAST),
        " ".join(FAST),
        {"model.path": MODEL, "refine": False, "progress": False},
        {"model": {"path": str(MODEL)}, "refine": False, "progress": False},
    ],
)
def test_overrides_as_a_tuple_a_string_or_a_mapping(overrides):
    image, holes = picture()
    assert api.override_list(overrides) == [f"model.path={MODEL}", "refine=false", "progress=false"]
    assert np.array_equal(inpaint(image, holes, overrides), inpaint(image, holes, FAST))


def test_override_values_from_python_keep_their_meaning():
    assert api.override_list(
        {"devices": ["cpu"], "refiner.n_iters": 3, "refiner.lr": 0.01, "shard": None, "out": "my result.png"}
    ) == ["devices=[cpu]", "refiner.n_iters=3", "refiner.lr=0.01", "shard=null", "out='my result.png'"]
    assert api.override_list("refine=false 'out=a b.png'") == ["refine=false", "out=a b.png"]


@pytest.mark.parametrize(
    "overrides, says", [(3, "got int"), (["refine=false", False], "got False (bool)"), ({1: 2}, "keys must be strings")]
)
def test_overrides_of_another_kind_are_a_type_error(overrides, says):
    image, holes = picture()
    with pytest.raises(TypeError, match=re.escape(says)):
        inpaint(image, holes, overrides)


def test_devices_from_python_in_the_command_lines_spellings():
    image, holes = picture()
    assert np.array_equal(inpaint(image, holes, [*FAST, "devices=cpu"]), inpaint(image, holes, FAST))
    if not __import__("torch").cuda.is_available():
        with pytest.raises(UserError, match=r"devices=cuda:1: cuda:1 is not available .*devices=cpu"):
            inpaint(image, holes, [*FAST, "devices=cuda:1"])


def test_an_inverted_mask_is_refused_and_mask_invert_takes_it():
    image, holes = picture()
    with pytest.raises(UserError, match=r"mask: the hole covers 87\.2% of the photo.*mask\.invert=true"):
        inpaint(image, ~holes, FAST)
    out = inpaint(image, ~holes, {**{o.split("=")[0]: o.split("=")[1] for o in FAST}, "mask.invert": True})
    assert np.array_equal(out, inpaint(image, holes, FAST))


def test_a_progress_bar_unless_progress_is_false(capsys, monkeypatch):
    monkeypatch.setattr(api, "_last_built", None)
    image, holes = picture(64, 80)
    refined = [f"model.path={MODEL}", "refiner.n_iters=2", "pyramid=fixed"]
    inpaint(image, holes, refined)
    assert "scale 2/2" in capsys.readouterr().err
    inpaint(image, holes, [*refined, "progress=false"])
    assert "scale" not in capsys.readouterr().err


@pytest.mark.parametrize("installed", [True, False])
def test_one_line_says_what_the_command_line_would_run_on(installed, monkeypatch, capsys, tmp_path):
    from lama_refine.config import compose
    from lama_refine.perf import allocator as allocators

    library = tmp_path / "libtcmalloc_minimal.so.4"
    library.write_bytes(b"")
    monkeypatch.setattr(allocators, "find_library", lambda name: library if installed and name == "tcmalloc" else None)
    monkeypatch.setattr(allocators, "on_glibc_malloc", lambda value=None: True)
    monkeypatch.setattr(api, "_said", set())
    monkeypatch.setattr(api.sys, "argv", ["make_strip.py"])
    cfg = compose([])
    line = api.say_allocator(cfg)
    expected = f"LD_PRELOAD={library} python make_strip.py" if installed else "apt install libtcmalloc-minimal4"
    assert expected in line and "\n" not in line
    assert capsys.readouterr().err.strip() == f"lama-refine: {line}"  # logging not set up: said on stderr
    assert api.say_allocator(cfg) is None  # once per process
    monkeypatch.setattr(api, "_said", set())
    assert api.say_allocator(compose(["perf.allocator=glibc"])) is None  # the CLI would not preload either


@pytest.mark.slow  # a subprocess
def test_the_api_imports_neither_the_command_line_checks_nor_the_batch_loop():
    import subprocess
    import sys

    code = (
        "import sys, lama_refine.app.api; "
        "print(sorted(m for m in sys.modules "
        "if m in ('lama_refine.app.usage', 'lama_refine.batch.runner', 'lama_refine.app.cli')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"
