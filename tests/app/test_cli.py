"""The command line over folders, checked against the original's outputs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN, Case, max_mean_diff
from PIL import Image

from lama_refine.app.cli import run
from lama_refine.config import compose

REPO = Path(__file__).resolve().parents[2]


def case_indir(case: Case, tmp_path: Path) -> Path:
    indir = tmp_path / "in"
    (indir / "sub").mkdir(parents=True)
    shutil.copy(case.path / "image.png", indir / "sub" / "photo.png")
    shutil.copy(case.path / "mask.png", indir / "sub" / "photo_mask001.png")
    return indir


def run_case(case, tmp_path, *extra, model="checkpoint"):
    indir, outdir = case_indir(case, tmp_path), tmp_path / "out"
    cfg = compose(
        [
            f"model.path={case.path / model}",
            f"indir={indir}",
            f"outdir={outdir}",
            "out_ext=.npy",
            "output.match_input_size=false",
            "progress=false",
            *case.overrides(),
            *extra,
        ]
    )
    summary = run(cfg)
    assert not summary.failed
    return np.load(outdir / "sub" / "photo_mask001.npy")


@pytest.mark.slow  # seconds: full suite only
def test_refined_output_matches_the_original(case, tmp_path):
    out = run_case(case, tmp_path)
    worst, mean = max_mean_diff(out, case.npy("refined"))
    assert out.shape == case.npy("refined").shape
    assert worst <= 1e-4 and mean <= 1e-5


@pytest.mark.slow  # seconds: full suite only
def test_plain_output_matches_the_original(case, tmp_path):
    out = run_case(case, tmp_path, "refine=false")
    assert max_mean_diff(out, case.npy("plain"))[0] <= 1e-5


@pytest.mark.slow  # seconds: full suite only
def test_match_input_size_restores_the_input_size_and_known_pixels(tmp_path):
    case = Case(GOLDEN / "px_budget_resize")
    out = run_case(case, tmp_path, "output.match_input_size=true")
    image, mask = case.image()[0].permute(1, 2, 0).numpy(), case.mask()[0, 0].numpy()
    assert out.shape == image.shape  # 250x190, where the original returns 177x135
    assert np.array_equal(out[mask == 0], image[mask == 0])
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.slow  # seconds: full suite only
def test_png_output_is_lamas_truncating_8bit_conversion(tmp_path):
    case = Case(GOLDEN / "three_scales")
    indir, outdir = case_indir(case, tmp_path), tmp_path / "out"
    run(
        compose(
            [
                f"model.path={case.path / 'generator.safetensors'}",
                f"indir={indir}",
                f"outdir={outdir}",
                "progress=false",
                *case.overrides(),
            ]
        )
    )
    ours = np.asarray(Image.open(outdir / "sub" / "photo_mask001.png"))
    theirs = np.asarray(Image.open(case.path / "refined.png"))
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1  # float noise may cross a level


def test_existing_outputs_are_skipped_and_bad_files_do_not_stop_the_batch(tmp_path):
    case = Case(GOLDEN / "odd_nonsquare_2scales")
    indir, outdir = case_indir(case, tmp_path), tmp_path / "out"
    (indir / "broken_mask.png").write_bytes(b"not a png")
    (indir / "broken.png").write_bytes(b"not a png either")
    (indir / "orphan_mask.png").write_bytes((case.path / "mask.png").read_bytes())
    cfg = compose(
        [
            f"model.path={case.path / 'checkpoint'}",
            f"indir={indir}",
            f"outdir={outdir}",
            "refine=false",
            "progress=false",
        ]
    )
    first = run(cfg)
    assert len(first.done) == 1 and len(first.failed) == 2
    reasons = " ".join(r for _, r in first.failed)
    assert "broken.png" in reasons and "orphan.png" in reasons
    second = run(cfg)
    assert len(second.done) == 0 and len(second.skipped) == 1
    assert not [p for p in outdir.rglob("*") if p.name.endswith(".tmp")]


def lama_refine(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "lama_refine.app.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow  # a subprocess
def test_command_line_with_lama_gpu_ids_spelling_fails_clearly_without_gpus(tmp_path):
    case = Case(GOLDEN / "three_scales")
    indir = case_indir(case, tmp_path)
    proc = lama_refine(
        f"model.path={case.path / 'checkpoint'}",
        f"indir={indir}",
        f"outdir={tmp_path / 'o'}",
        "refiner.gpu_ids='0,1'",
        cwd=tmp_path,
    )
    if proc.returncode == 0:
        pytest.skip("machine has two GPUs")
    assert "cuda:0" in proc.stderr and "not available" in proc.stderr


@pytest.mark.slow  # a subprocess
def test_multirun_sweep_writes_each_setting_to_its_own_folder(tmp_path):
    case = Case(GOLDEN / "odd_nonsquare_2scales")
    indir, outdir = case_indir(case, tmp_path), tmp_path / "out"
    proc = lama_refine(
        "--multirun",
        f"model.path={case.path / 'generator.torchscript.pt'}",
        f"indir={indir}",
        f"outdir={outdir}",
        "out_ext=.npy",
        "progress=false",
        "output.match_input_size=false",
        *case.overrides(),
        "refine=true,false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    refined = np.load(outdir / "refine=True" / "sub" / "photo_mask001.npy")
    plain = np.load(outdir / "refine=False" / "sub" / "photo_mask001.npy")
    assert max_mean_diff(refined, case.npy("refined"))[0] <= 1e-4
    assert max_mean_diff(plain, case.npy("plain"))[0] <= 1e-5
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()  # logs stay in outdir


def good_folder(indir: Path, n: int, size=(96, 128)) -> list[str]:
    rng = np.random.default_rng(3)
    indir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(indir / f"p{i}.png")
        mask = np.zeros(size, np.uint8)
        mask[20:50, 30:90] = 255
        Image.fromarray(mask).save(indir / f"p{i}_mask.png")
    return [f"p{i}_mask.png" for i in range(n)]


def start_and_kill_after_new_output(args, outdir: Path, sig: int, cwd: Path):
    """Start the CLI, wait until one more output appears, send `sig`; -> (outputs, stdout+stderr)."""
    before = set(outdir.glob("*.png")) if outdir.exists() else set()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lama_refine.app.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (set(outdir.glob("*.png")) - before) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, {p.name: p.stat().st_mtime_ns for p in outdir.glob("*.png")}, out


@pytest.mark.slow  # a subprocess
def test_killed_batch_resumes_and_does_every_file_exactly_once(tmp_path):
    case = Case(GOLDEN / "three_scales")
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_folder(indir, 6)
    (indir / "junk_mask.png").write_bytes(b"\x89PNG but not really")
    Image.new("RGB", (128, 96)).save(indir / "junk.png")
    args = [
        f"model.path={case.path / 'generator.safetensors'}",
        f"indir={indir}",
        f"outdir={outdir}",
        "pyramid.min_side=48",
        "refiner.n_iters=5",
        "progress=false",
    ]

    rc, first, log = start_and_kill_after_new_output(args, outdir, signal.SIGTERM, tmp_path)
    assert rc == 128 + signal.SIGTERM and "interrupted" in log, log  # SIGTERM: cleaned up, summary printed
    assert 1 <= len(first) < len(names)
    rc, second, _ = start_and_kill_after_new_output(args, outdir, signal.SIGKILL, tmp_path)
    assert rc == -signal.SIGKILL and len(first) < len(second) < len(names)
    assert all(second[name] == mtime for name, mtime in first.items())

    proc = lama_refine(*args, cwd=tmp_path)
    assert proc.returncode == 1  # the junk file
    assert "junk_mask.png: not an image" in proc.stdout and "1 failed" in proc.stdout
    finished = {p.name: p.stat().st_mtime_ns for p in outdir.glob("*.png")}
    assert sorted(finished) == names and all(finished[n] == m for n, m in second.items())
    assert not [p for p in outdir.rglob("*") if p.name.endswith(".tmp")]
    records = [json.loads(line) for line in (outdir / "manifest.jsonl").read_text().splitlines()]
    done = [r["output"] for r in records if r["status"] == "done"]
    assert len(done) == len(set(done)) and set(done) <= set(names)  # never done twice
    assert not set(second) & {r["output"] for r in records if r["status"] == "done" and r["pid"] == records[-1]["pid"]}


@pytest.mark.slow  # a subprocess
def test_command_line_names_each_bad_file_and_exits_1(tmp_path):
    case = Case(GOLDEN / "three_scales")
    indir = tmp_path / "in"
    good_folder(indir, 1, size=(24, 32))
    (indir / "ghost_mask.png").write_bytes((indir / "p0_mask.png").read_bytes())
    (indir / "empty.png").write_bytes(b"")
    shutil.copy(indir / "p0_mask.png", indir / "empty_mask.png")
    proc = lama_refine(
        f"model.path={case.path / 'generator.safetensors'}",
        f"indir={indir}",
        f"outdir={tmp_path / 'o'}",
        "refine=false",
        "progress=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "1 done, 0 skipped (output exists), 2 failed" in proc.stdout
    assert "ghost_mask.png: no image for this mask" in proc.stdout and "empty.png: empty file" in proc.stdout


# --- one image, one command ---------------------------------------------------------------------------


def one_image(tmp_path, size=(40, 56)):
    good_folder(tmp_path / "in", 1, size=size)
    return tmp_path / "in" / "p0.png", tmp_path / "in" / "p0_mask.png"


@pytest.mark.parametrize("name", ["result.png", "deep/er/result.webp", "result.jpg", "result.tif", "result.npy"])
def test_one_image_one_command(name, tmp_path, monkeypatch):
    from lama_refine.app.cli import entry

    image, mask = one_image(tmp_path)
    out = tmp_path / "o" / name
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "lama-refine",
            f"image={image}",
            f"mask={mask}",
            f"out={out}",
            f"model.path={Case(GOLDEN / 'three_scales').path / 'generator.safetensors'}",
            "refiner.n_iters=2",
            "pyramid=fixed",
            "progress=false",
        ],
    )
    with pytest.raises(SystemExit) as done:
        entry()
    assert done.value.code == 0
    made = [p for p in (tmp_path / "o").rglob("*") if p.is_file()]
    assert made == [out]  # nothing else: no log folder, no manifest, no temporary
    result = np.load(out) if out.suffix == ".npy" else np.asarray(Image.open(out))
    assert result.shape == (40, 56, 3)
    if out.suffix in (".png", ".tif", ".npy"):
        source = np.asarray(Image.open(image).convert("RGB"))
        holes = np.asarray(Image.open(mask)) > 0
        known = result[~holes] if out.suffix != ".npy" else np.clip(result[~holes] * 255, 0, 255).astype(np.uint8)
        assert np.array_equal(known, source[~holes])


def test_one_image_with_a_bad_file_is_one_line_and_exit_1(tmp_path):
    image, mask = one_image(tmp_path)
    mask.write_bytes(b"not a png")
    proc = lama_refine(
        f"image={image}",
        f"mask={mask}",
        f"out={tmp_path / 'r.png'}",
        "refine=false",
        f"model.path={Case(GOLDEN / 'three_scales').path / 'generator.safetensors'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "p0_mask.png: not an image" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r.png").exists()
