"""The evaluation app: metrics, inputs, one run, a --multirun sweep with its comparison."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from conftest import GOLDEN, Case
from PIL import Image

from lama_refine.app.evaluate import (
    PeakMemory,
    comparison_figure,
    find_samples,
    image_metrics,
    load_sample,
    markdown_table,
    write_comparison,
)
from lama_refine.app.evaluate import evaluate as run_evaluation
from lama_refine.config import compose

REPO = Path(__file__).resolve().parents[2]
CASE = Case(GOLDEN / "odd_nonsquare_2scales")
MODEL = CASE.path / "generator.safetensors"


def test_metrics_measure_the_whole_image_and_the_hole():
    truth = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(0)) * 0.8
    mask = torch.zeros(1, 1, 32, 40)
    mask[..., 8:16, 10:30] = 1
    result = truth + 0.1 * mask
    m = image_metrics(result, truth, mask)
    assert m["hole_l1"] == pytest.approx(0.1, rel=1e-6)
    mse = 0.01 * mask.mean().item()
    assert m["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert 0 < m["ssim"] < 1
    same = image_metrics(truth, truth, mask)
    assert same["ssim"] == pytest.approx(1.0) and same["hole_l1"] == 0 and math.isinf(same["psnr"])


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_masks_come_from_a_folder_in_either_naming(tmp_path):
    gt, masks = tmp_path / "gt", tmp_path / "masks"
    rgb, hole = np.zeros((20, 24, 3), np.uint8), np.zeros((20, 24), np.uint8)
    for name in ("a.png", "sub/b.jpg"):
        write_png(gt / name, rgb)
    write_png(gt / "a_mask.png", hole)  # a LaMa-style mask next to the image is not an image
    write_png(masks / "a_mask001.png", hole)
    write_png(masks / "a_mask002.png", hole)
    write_png(masks / "sub/b.png", hole)
    samples = find_samples(gt, masks, seed=0)
    assert [(s.name, s.mask.relative_to(masks).as_posix()) for s in samples] == [
        ("a_mask001", "a_mask001.png"),
        ("a_mask002", "a_mask002.png"),
        ("sub/b", "sub/b.png"),
    ]
    (masks / "sub/b.png").unlink()
    with pytest.raises(FileNotFoundError, match="no mask for"):
        find_samples(gt, masks, seed=0)


def test_masks_beside_the_photos_are_used_when_there_are_any(tmp_path, caplog):
    gt = tmp_path / "gt"
    rgb = np.zeros((20, 24, 3), np.uint8)
    hole = np.zeros((20, 24), np.uint8)
    hole[5:9, 6:12] = 255
    for name in ("a.png", "sub/b.jpg", "c.png"):
        write_png(gt / name, rgb)
    write_png(gt / "a_mask.png", hole)
    write_png(gt / "sub/b_mask001.png", hole)
    write_png(gt / "sub/b_mask002.png", 255 - hole)
    write_png(gt / "out/crop.png", rgb)  # an earlier run's outdir inside gt_dir: not an input
    write_png(gt / "out/masks/crop_mask.png", hole)
    samples = find_samples(gt, None, seed=0, exclude=[gt / "out"])
    assert [(s.name, s.mask.relative_to(gt).as_posix()) for s in samples] == [
        ("a", "a_mask.png"),
        ("sub/b_mask001", "sub/b_mask001.png"),
        ("sub/b_mask002", "sub/b_mask002.png"),
    ]
    assert "1 image(s)" in caplog.text and "c.png" in caplog.text  # c has no mask: said, not evaluated
    image, mask = load_sample(samples[2], "thick")
    assert torch.equal(mask[0, 0], torch.from_numpy(255 - hole > 0).float())
    assert [s.name for s in find_samples(gt, None, seed=0, max_images=1, exclude=[gt / "out"])] == ["a"]
    (gt / "sub/b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="no image for this mask"):
        find_samples(gt, None, seed=0, exclude=[gt / "out"])


def test_comparison_plot_axes_have_no_offset_notation():
    pytest.importorskip("matplotlib")
    rows = [
        {
            "setting": f"s{i}",
            "psnr": 30.0001 + i * 1e-4,
            "ssim": 0.957412 + i * 3e-6,
            "hole_l1": 0.05,
            "time_s": 1000.0 + i * 0.01,
            "peak_mem_mb": 512.0,
        }
        for i in range(3)
    ]
    fig = comparison_figure(rows)
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.yaxis.get_offset_text().get_text() == ""
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert labels and not any("e" in t or "+" in t for t in labels), labels
    ssim_labels = [float(t.get_text().replace("−", "-")) for t in fig.axes[1].get_yticklabels() if t.get_text()]
    assert all(0.9574 < v < 0.9575 for v in ssim_labels)


def test_generated_masks_are_fixed_by_seed_and_name_only(tmp_path):
    gt = tmp_path / "gt"
    for name in ("x.png", "y.png"):
        write_png(gt / name, np.zeros((64, 80, 3), np.uint8))
    first = {s.name: load_sample(s, "medium")[1] for s in find_samples(gt, None, seed=3)}
    write_png(gt / "w.png", np.zeros((64, 80, 3), np.uint8))  # sorts first: shifts every index
    again = {s.name: load_sample(s, "medium")[1] for s in find_samples(gt, None, seed=3)}
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not torch.equal(first["x"], first["y"])
    other = {s.name: load_sample(s, "medium")[1] for s in find_samples(gt, None, seed=4)}
    assert not torch.equal(first["x"], other["x"])
    assert all(0 < m.mean() <= 0.5 for m in first.values())


def test_peak_memory_sees_a_cpu_allocation():
    with PeakMemory([torch.device("cpu")]) as memory:
        block = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
        block += 1
        del block
    assert 48 < memory.mb < 1024


def gt_folder(tmp_path: Path, n: int = 2) -> Path:
    """`n` small crops of a fixture photo."""
    photo = np.asarray(Image.open(CASE.path / "image.png"))
    for i in range(n):
        write_png(tmp_path / "gt" / f"crop{i}.png", photo[i * 20 : i * 20 + 72, i * 30 : i * 30 + 104])
    return tmp_path / "gt"


def rows_of(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # seconds: full suite only
def test_one_evaluation_writes_tables_and_pictures_inside_outdir(tmp_path):
    gt = gt_folder(tmp_path, 3)
    out = tmp_path / "out"
    cfg = compose(
        [
            f"gt_dir={gt}",
            f"outdir={out}",
            f"model.path={MODEL}",
            "progress=false",
            "visuals=2",
            "warmup=false",
            "refiner.n_iters=2",
            "pyramid=fixed",
            "save_outputs=true",
        ],
        config_name="evaluate",
    )
    result = run_evaluation(cfg)
    rows = rows_of(out / "metrics.csv")
    assert [r["image"] for r in rows] == ["crop0", "crop1", "crop2", "mean"]
    for metric in ("psnr", "ssim", "hole_l1", "time_s", "peak_mem_mb"):
        values = [float(r[metric]) for r in rows[:-1]]
        assert np.isfinite(values).all()
        assert float(rows[-1][metric]) == pytest.approx(np.mean(values))
    assert result.mean["ssim"] == pytest.approx(float(rows[-1]["ssim"]))
    assert "| mean |" in (out / "metrics.md").read_text()
    pictures = sorted((out / "visuals").glob("*.png"))
    assert [p.name for p in pictures] == ["crop0.png", "crop1.png"]
    assert Image.open(pictures[0]).size[0] > 4 * 104  # four panels side by side
    assert sorted(p.name for p in (out / "outputs").glob("*.png")) == ["crop0.png", "crop1.png", "crop2.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 3 and [r["image"] for r in summary["images"]] == ["crop0", "crop1", "crop2"]
    bins = rows_of(out / "bins.csv")
    assert sum(int(r["n_images"]) for r in bins[:-1]) == 3 and bins[-1]["bin"] == "overall"
    assert all(r["bin"] in {b["bin"] for b in bins} for r in rows[:-1])
    assert "## By the mask's share of the image (LaMa's bins)" in (out / "metrics.md").read_text()


def test_comparison_table_and_plot_from_job_summaries(tmp_path):
    for job, (setting, psnr) in enumerate([("refine=True", 20.0), ("refine=False", 19.5)]):
        (tmp_path / setting).mkdir()
        mean = {"psnr": psnr, "ssim": 0.8, "hole_l1": 0.1, "time_s": 1.0, "peak_mem_mb": 10.0}
        (tmp_path / setting / "summary.json").write_text(
            json.dumps({"setting": setting, "job": job, "n_images": 2, "mean": mean})
        )
    rows = write_comparison(tmp_path)
    assert [r["setting"] for r in rows] == ["refine=True", "refine=False"]
    assert [float(r["psnr"]) for r in rows_of(tmp_path / "comparison.csv")] == [20.0, 19.5]
    assert (tmp_path / "comparison.md").read_text() == markdown_table(
        rows, "setting", ["n_images", "psnr", "ssim", "hole_l1", "time_s", "peak_mem_mb"]
    )
    assert Image.open(tmp_path / "comparison.png").size[0] > 400


def app(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # one thread: these check behaviour, not speed, and two threads per process oversubscribe shared cores
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # a subprocess
def test_evaluation_sweep_writes_one_comparison_of_all_settings(tmp_path):
    gt = gt_folder(tmp_path, 1)
    out = tmp_path / "out"
    app(
        "lama_refine.app.evaluate",
        "--multirun",
        f"gt_dir={gt}",
        f"outdir={out}",
        f"model.path={MODEL}",
        "progress=false",
        "visuals=1",
        "warmup=false",
        "refiner.n_iters=2",
        "refine=true,false",
        "pyramid=original,fixed",
        "baseline=refine=False,pyramid=fixed",
        cwd=tmp_path,
    )
    (sweep,) = (out / "sweeps").iterdir()
    settings = [
        "refine=True,pyramid=original",
        "refine=True,pyramid=fixed",
        "refine=False,pyramid=original",
        "refine=False,pyramid=fixed",
    ]
    table = rows_of(sweep / "comparison.csv")
    assert [r["setting"] for r in table] == settings
    for setting, row in zip(settings, table, strict=True):
        mean = rows_of(sweep / setting / "metrics.csv")[-1]
        assert float(row["psnr"]) == pytest.approx(float(mean["psnr"]))
        assert (sweep / setting / "visuals" / "crop0.png").is_file()
    # refine=false ignores the pyramid: the two plain settings agree; two refined scales change the hole
    assert table[2]["hole_l1"] == table[3]["hole_l1"]
    assert table[1]["hole_l1"] != table[2]["hole_l1"]
    text = (sweep / "comparison.md").read_text()
    assert "refine=True,pyramid=fixed" in text and "minus the baseline **refine=False,pyramid=fixed**" in text
    # the other plain setting ties the baseline on the one image; the refined ones are compared with it
    assert table[2]["hole_l1_ties"] == "1" and table[3]["hole_l1_diff"] == ""
    assert int(table[1]["hole_l1_wins"]) + int(table[1]["hole_l1_losses"]) == 1
    assert (sweep / "comparison.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt", "out"]  # nothing written outside outdir


@pytest.mark.slow  # a subprocess
def test_main_app_sweeps_the_new_alternatives(tmp_path):
    gt = gt_folder(tmp_path, 1)
    photo = np.asarray(Image.open(gt / "crop0.png"))
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[20:50, 30:70] = 255
    write_png(gt / "crop0_mask.png", mask)
    out = tmp_path / "out"
    app(
        "lama_refine.app.cli",
        "--multirun",
        f"model.path={MODEL}",
        f"indir={gt}",
        f"outdir={out}",
        "out_ext=.npy",
        "progress=false",
        "refine=true,false",
        "refiner=l1,plain",
        "pyramid=fixed",
        cwd=tmp_path,
    )
    results = {d.name: np.load(d / "crop0_mask.npy") for d in out.iterdir() if not d.name.startswith(".")}
    assert sorted(results) == [
        "refine=False,refiner=l1",
        "refine=False,refiner=plain",
        "refine=True,refiner=l1",
        "refine=True,refiner=plain",
    ]
    known = mask == 0
    for result in results.values():
        assert np.isfinite(result).all() and np.array_equal(result[known], photo[known] / np.float32(255))
    assert np.array_equal(results["refine=False,refiner=l1"], results["refine=False,refiner=plain"])
    assert not np.array_equal(results["refine=True,refiner=l1"], results["refine=True,refiner=plain"])


def test_console_script_is_declared():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["lama-refine-eval"].partition(":")
    assert (module, name) == ("lama_refine.app.evaluate", "entry")
    from lama_refine.app import evaluate

    assert callable(evaluate.entry)
