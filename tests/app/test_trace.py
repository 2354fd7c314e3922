"""`trace=DIR`: the refiner hands each scale to `RefineHooks.on_scale`; `Tracer` writes it."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import GOLDEN, Case
from PIL import Image

from lama_refine.app.trace import INDEX_HTML, TRACE_JSON, Tracer, display_size, safe_name
from lama_refine.config import compose
from lama_refine.parts.downsample import AllPixelsMaskDownsampler, BlurMaskDownsampler, GaussianDownsampler
from lama_refine.parts.partition import EvenPartitioner
from lama_refine.parts.pyramid import OriginalPyramid
from lama_refine.parts.refine import L1Refiner, PlainRefiner, RefineHooks, ScaleTrace

CASE = Case(GOLDEN / "odd_nonsquare_2scales")
MODEL = GOLDEN / "three_scales" / "generator.safetensors"


@pytest.fixture(scope="module")
def small():
    levels = OriginalPyramid(GaussianDownsampler(), BlurMaskDownsampler(), min_side=96).build(CASE.image(), CASE.mask())
    partition = EvenPartitioner().split(CASE.generator(), [torch.device("cpu")])
    return levels, partition


def l1() -> L1Refiner:
    # erosion_size 3: the small case's coarse hole survives erosion, so the loss hole is not empty
    return L1Refiner(GaussianDownsampler(), AllPixelsMaskDownsampler(), n_iters=3, erosion_size=3)


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_tracing_changes_no_output_and_sees_every_scale(small):
    levels, partition = small
    seen: list[ScaleTrace] = []
    plain = l1().refine(partition, levels)
    traced = l1().refine(partition, levels, RefineHooks(on_scale=seen.append))
    assert torch.equal(plain.image, traced.image)  # bit-identical
    assert all(torch.equal(a, b) for a, b in zip(plain.scales, traced.scales, strict=True))
    assert [t.index for t in seen] == list(range(len(levels))) and len(levels) >= 2
    for t, level, result, losses in zip(seen, levels, traced.scales, traced.losses, strict=True):
        assert t.image is level.image and t.mask is level.mask and t.result is result
        assert t.losses == losses
    assert seen[0].loss_hole is None and seen[0].target is None  # the coarsest is one plain forward
    finer = seen[1]
    assert finer.target is traced.scales[0]
    assert finer.loss_hole is not None and finer.loss_hole.dtype == torch.bool
    assert finer.loss_hole.shape[-2:] == traced.scales[0].shape[-2:] and finer.loss_hole.any()
    # eroded: inside the coarser scale's hole, and smaller than it
    coarse_hole = AllPixelsMaskDownsampler()(levels[1].mask) > 0
    assert not (finer.loss_hole & ~coarse_hole).any() and finer.loss_hole.sum() < coarse_hole.sum()


def test_a_traced_run_writes_every_file_per_scale_at_the_right_sizes(small, tmp_path):
    levels, partition = small
    tracer = Tracer(tmp_path / "trace", display_max=200)
    tracer.start("sub/photo_mask")
    result = l1().refine(partition, levels, RefineHooks(on_scale=tracer.on_scale))
    folder = tracer.finish()
    assert folder == tmp_path / "trace" / "sub_photo_mask"
    assert sorted(p.name for p in (tmp_path / "trace").iterdir()) == ["sub_photo_mask"]  # nothing else, no temporaries
    content = json.loads((folder / TRACE_JSON).read_text())
    h, w = levels[-1].size
    shown = display_size((h, w), 200)
    assert max(shown) == 200 and content["display_size"] == list(shown)
    assert [s["losses"] for s in content["scales"]] == result.losses  # the values the Refinement has
    assert [len(s["losses"]) for s in content["scales"]] == [0, 3]
    for entry, level in zip(content["scales"], levels, strict=True):
        own = list(level.size)
        expected = {"image", "image_display", "mask", "mask_display", "result", "result_display"}
        if entry["scale"] > 0:
            expected |= {"loss_hole", "loss_hole_display", "target", "losses_plot"}
        assert set(entry["files"]) == expected
        for key, name in entry["files"].items():
            array = png(folder / name)
            if key == "losses_plot":
                continue
            size = list(shown) if key.endswith("_display") else entry["sizes"][key]
            assert list(array.shape[:2]) == size, key
        assert entry["sizes"]["image"] == own == entry["sizes"]["mask"] == entry["sizes"]["result"]
        if entry["scale"] > 0:
            coarse = [own[0] // 2, own[1] // 2]
            assert entry["sizes"]["loss_hole"] == coarse == entry["sizes"]["target"]
        # masks are upscaled nearest: still only black and white, and the hole where it was
        mask_shown = png(folder / entry["files"]["mask_display"])
        assert set(np.unique(mask_shown)) <= {0, 255}
        mask_own = png(folder / entry["files"]["mask"])[..., 0] > 0
        assert mask_own.sum() == entry["hole_pixels"] == int(level.mask.sum())
    page = (folder / INDEX_HTML).read_text()
    for entry in content["scales"]:
        for name in entry["files"].values():
            assert f'"{name}"' in page or f"={name}" in page  # every picture linked, relative
    assert "http" not in page  # no network


def test_the_plain_refiner_traces_its_one_scale(small, tmp_path):
    levels, partition = small
    tracer = Tracer(tmp_path)
    tracer.start("p")
    PlainRefiner().refine(partition, levels, RefineHooks(on_scale=tracer.on_scale))
    content = json.loads((tracer.finish() / TRACE_JSON).read_text())
    assert [(s["scale"], s["losses"], s["size"]) for s in content["scales"]] == [(0, [], list(levels[-1].size))]


def test_without_a_start_nothing_is_kept_or_written(small, tmp_path):
    levels, partition = small
    tracer = Tracer(tmp_path / "t")
    PlainRefiner().refine(partition, levels, RefineHooks(on_scale=tracer.on_scale))  # e.g. a warm-up run
    assert tracer.finish() is None and not (tmp_path / "t").exists()


def test_trace_changes_no_config_hash():
    from lama_refine.batch.runner import config_hash, legacy_config_hash

    plain = compose(["indir=x", "outdir=y"])
    traced = compose(["indir=x", "outdir=y", "trace=t"])
    assert config_hash(plain) == config_hash(traced)  # a traced rerun keeps the outputs made without it
    assert legacy_config_hash(plain) == legacy_config_hash(traced)
    assert config_hash(plain) != config_hash(compose(["indir=x", "outdir=y", "refine=false"]))


@pytest.mark.parametrize("name, folder", [("../../etc/x", "etc_x"), ("/abs/p.png", "abs_p.png"), ("..", "image")])
def test_names_stay_inside_the_trace_folder(name, folder):
    assert safe_name(name) == folder


def test_one_image_with_trace(tmp_path, monkeypatch):
    from lama_refine.app.cli import entry

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (72, 104, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    hole = np.zeros((72, 104), np.uint8)
    hole[20:50, 30:70] = 255
    Image.fromarray(hole).save(tmp_path / "p_mask.png")
    common = ["image=p.png", "mask=p_mask.png", f"model.path={MODEL}", "refiner.n_iters=2", "pyramid=fixed"]
    monkeypatch.chdir(tmp_path)
    for out, extra in [("plain.png", []), ("traced.png", ["trace=tr"])]:
        monkeypatch.setattr(sys, "argv", ["lama-refine", *common, f"out={out}", "progress=false", *extra])
        with pytest.raises(SystemExit) as done:
            entry()
        assert done.value.code == 0
    assert np.array_equal(png(tmp_path / "plain.png"), png(tmp_path / "traced.png"))
    content = json.loads((tmp_path / "tr" / "traced" / TRACE_JSON).read_text())
    assert len(content["scales"]) == 2 and len(content["scales"][1]["losses"]) == 2


def test_an_out_of_memory_retry_traces_only_the_try_that_worked(tmp_path, monkeypatch):
    """The failed try's scales reached the tracer before its error; the batch's retry callback
    makes the tracer forget them."""
    from lama_refine.app.cli import entry
    from lama_refine.pipeline import Inpainter

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (72, 104, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    hole = np.zeros((72, 104), np.uint8)
    hole[20:50, 30:70] = 255
    Image.fromarray(hole).save(tmp_path / "p_mask.png")
    real_run, budgets = Inpainter.run, []

    def out_of_memory_after_refining_once(self, image, mask):
        budgets.append(self.pyramid.px_budget)
        result = real_run(self, image, mask)  # every scale traced
        if len(budgets) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return result

    monkeypatch.setattr(Inpainter, "run", out_of_memory_after_refining_once)
    monkeypatch.chdir(tmp_path)
    args = ["image=p.png", "mask=p_mask.png", f"model.path={MODEL}", "refiner.n_iters=2", "pyramid=fixed"]
    monkeypatch.setattr(sys, "argv", ["lama-refine", *args, "out=o.png", "progress=false", "trace=tr"])
    with pytest.raises(SystemExit) as done:
        entry()
    assert done.value.code == 0 and budgets == [1_800_000, 900_000]
    content = json.loads((tmp_path / "tr" / "o" / TRACE_JSON).read_text())
    assert [s["scale"] for s in content["scales"]] == [0, 1] and {s["crop"] for s in content["scales"]} == {0}


@pytest.mark.slow  # seconds: an evaluation of three images
def test_evaluation_traces_only_the_first_visuals_images(tmp_path):
    from lama_refine.app.evaluate import evaluate

    photo = np.asarray(Image.open(CASE.path / "image.png"))
    (tmp_path / "gt").mkdir()
    for i in range(3):
        Image.fromarray(photo[i * 20 : i * 20 + 72, i * 30 : i * 30 + 104]).save(tmp_path / "gt" / f"c{i}.png")
    cfg = compose(
        [
            f"gt_dir={tmp_path / 'gt'}",
            f"outdir={tmp_path / 'out'}",
            f"trace={tmp_path / 'tr'}",
            f"model.path={MODEL}",
            "progress=false",
            "visuals=2",
            "warmup=true",
            "refiner.n_iters=2",
            "pyramid=fixed",
        ],
        config_name="evaluate",
    )
    evaluate(cfg)
    assert sorted(p.name for p in (tmp_path / "tr").iterdir()) == ["c0", "c1"]
    for name in ("c0", "c1"):
        content = json.loads((tmp_path / "tr" / name / TRACE_JSON).read_text())
        assert [len(s["losses"]) for s in content["scales"]] == [0, 2]  # one run each: the warm-up is not traced
