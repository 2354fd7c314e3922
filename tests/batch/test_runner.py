"""Batch mode: a corpus of bad inputs, resuming, the manifest, shards, out-of-memory retries."""

import json
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GOLDEN
from omegaconf import open_dict
from PIL import Image

import lama_refine.batch.runner as batch
from lama_refine.app.cli import run
from lama_refine.batch.runner import (
    MANIFEST,
    Manifest,
    Shard,
    config_hash,
    deferred_interrupts,
    inpaint_with_retries,
    is_out_of_memory,
    read_manifest,
)
from lama_refine.config import build_inpainter, compose
from lama_refine.io import InputError, Inputs, write_atomic
from lama_refine.pipeline import Inpainter

REPO = Path(__file__).resolve().parents[2]
MODEL = GOLDEN / "three_scales" / "generator.safetensors"
RNG = np.random.default_rng(7)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def photo(h=24, w=32) -> np.ndarray:
    return (RNG.random((h, w, 3)) * 255).astype(np.uint8)


def box(h=24, w=32, fill=None) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    if fill is None:
        m[5:12, 6:20] = 255
    else:
        m[:] = fill
    return m


def config(indir, outdir, *extra):
    return compose([f"model.path={MODEL}", f"indir={indir}", f"outdir={outdir}", "progress=false", *extra])


def good_pairs(indir: Path, n: int, size=(24, 32)) -> list[str]:
    """n good LaMa-layout pairs; returns the mask names (= output names)."""
    names = []
    for i in range(n):
        save(indir / f"g{i}.png", photo(*size))
        save(indir / f"g{i}_mask.png", box(*size))
        names.append(f"g{i}_mask.png")
    return names


def tmp_files(outdir: Path) -> list[Path]:
    return [p for p in outdir.rglob("*") if p.name.endswith(".tmp")]


# --- a corpus with every kind of bad input, as one batch --------------------------------------------


def bad_corpus(indir: Path) -> tuple[set[str], dict[str, str]]:
    """Good outputs expected, and bad files -> the problem their report must mention."""
    good = {"good_mask.png", "sub/deep_mask.png", "jpeg_mask.png", "empty_mask.png", "full_mask.png"}
    save(indir / "good.png", photo())
    save(indir / "good_mask.png", box())
    save(indir / "sub" / "deep.webp", photo())
    save(indir / "sub" / "deep_mask.png", box())
    Image.fromarray(photo()).save(indir / "jpeg.jpg", quality=90)
    save(indir / "jpeg_mask.png", box())
    save(indir / "empty.png", photo())
    save(indir / "empty_mask.png", box(fill=0))
    save(indir / "full.png", photo())
    save(indir / "full_mask.png", box(fill=255))

    bad = {}
    whole = save(indir / "trunc.png", photo()).read_bytes()
    (indir / "trunc.png").write_bytes(whole[: len(whole) // 2])
    save(indir / "trunc_mask.png", box())
    bad["trunc.png"] = "truncated"
    (indir / "text.png").write_text("this is not a picture")
    save(indir / "text_mask.png", box())
    bad["text.png"] = "not an image"
    save(indir / "zero.png", photo())
    (indir / "zero_mask.png").write_bytes(b"")
    bad["zero_mask.png"] = "empty file"
    save(indir / "size.png", photo())
    save(indir / "size_mask.png", box(12, 16))
    bad["size_mask.png"] = "mask is 12x16"
    save(indir / "orphan_mask.png", box())
    bad["orphan_mask.png"] = "no image for this mask"
    save(indir / "tiny.png", photo(3, 5))
    save(indir / "tiny_mask.png", box(3, 5, fill=255))
    bad["tiny.png"] = "too small"
    (indir / "folder.png").mkdir()
    save(indir / "folder_mask.png", box())
    bad["folder.png"] = "is a folder"
    (indir / "dir_mask.png").mkdir()
    bad["dir_mask.png"] = "is a folder"
    save(indir / "locked.png", photo())
    save(indir / "locked_mask.png", box())
    bad["locked.png"] = "permission denied"
    return good, bad


def test_bad_input_corpus_in_one_batch(tmp_path, monkeypatch, caplog):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good, bad = bad_corpus(indir)
    real_access = os.access  # root reads everything: deny one file the way a locked file would be
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p).name == "locked.png" else real_access(p, m))
    with caplog.at_level(logging.INFO, logger="lama_refine"):
        summary = run(config(indir, outdir, "mask.max_hole=1.0"))  # full masks are done here, with a note

    assert {str(p.relative_to(outdir)) for p in summary.done} == good
    made = {str(p.relative_to(outdir)) for p in outdir.rglob("*.png") if ".lama-refine" not in p.parts}
    assert made == good  # nothing for the bad ones
    assert not tmp_files(outdir)
    assert len(summary.failed) == len(bad)
    for name, problem in bad.items():  # one clear line per bad file: its name and its problem
        lines = [r for _, r in summary.failed if f"/{name}:" in r]
        assert len(lines) == 1 and problem in lines[0], (name, lines)
        errors = [
            r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and f"/{name}:" in r.getMessage()
        ]
        assert len(errors) == 1
    notes = dict((p.name, n) for p, n in summary.notes)
    assert "empty mask" in notes["empty_mask.png"] and "whole image" in notes["full_mask.png"]
    report = summary.report()
    assert report.startswith(f"{len(good)} done, 0 skipped (output exists), {len(bad)} failed")
    assert all(name in report for name in bad)

    records = read_manifest(outdir / MANIFEST)
    assert sorted(r["output"] for r in records if r["status"] == "done") == sorted(good)
    assert len([r for r in records if r["status"] == "failed"]) == len(bad)
    # the empty mask's output is the image itself
    assert np.array_equal(
        np.asarray(Image.open(outdir / "empty_mask.png")), np.asarray(Image.open(indir / "empty.png"))
    )


def test_split_layout_with_one_mask_and_jpeg_output(tmp_path):
    images, outdir = tmp_path / "images", tmp_path / "out"
    for name in ("a.png", "b/c.jpg"):
        save(images / name, photo())
    one = save(tmp_path / "one_mask.png", box())
    summary = run(config(images, outdir, f"maskdir={one}", "refine=false", "out_ext=.jpg", "out_quality=80"))
    assert not summary.failed
    assert sorted(str(p.relative_to(outdir)) for p in summary.done) == ["a.jpg", "b/c.jpg"]
    assert Image.open(outdir / "b" / "c.jpg").size == (32, 24)


def test_outputs_escaping_through_a_symlink_are_refused(tmp_path):
    indir, outdir, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    good_pairs(indir, 1)
    save(indir / "sub" / "x.png", photo())
    save(indir / "sub" / "x_mask.png", box())
    elsewhere.mkdir()
    outdir.mkdir()
    (outdir / "sub").symlink_to(elsewhere, target_is_directory=True)
    summary = run(config(indir, outdir, "refine=false"))
    assert len(summary.done) == 1 and "refused" in summary.failed[0][1]
    assert list(elsewhere.iterdir()) == []


def test_outdir_inside_indir_is_not_searched(tmp_path):
    indir = tmp_path / "in"
    names = good_pairs(indir, 2)
    cfg = config(indir, indir / "results", "refine=false")
    assert len(run(cfg).done) == 2
    second = run(cfg)  # the outputs (named *_mask.png) must not become inputs
    assert len(second.skipped) == 2 and not second.failed and not second.done
    assert sorted(p.name for p in (indir / "results").glob("*.png")) == names


# --- resuming ----------------------------------------------------------------------------------------


def test_interrupted_batch_resumes_without_recomputing(tmp_path, monkeypatch):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 3)
    cfg = config(indir, outdir, "refine=false")
    real_write = batch.write_result
    calls = []

    def interrupted_on_second(path, image, **kw):
        calls.append(path)
        if len(calls) == 2:  # Ctrl-C in the middle of writing the second output

            def half(tmp):
                tmp.write_bytes(b"half a png")
                raise KeyboardInterrupt

            write_atomic(path, half)
        real_write(path, image, **kw)

    monkeypatch.setattr(batch, "write_result", interrupted_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    assert sorted(p.name for p in outdir.glob("*.png")) == [names[0]] and not tmp_files(outdir)
    first_mtime = (outdir / names[0]).stat().st_mtime_ns

    monkeypatch.setattr(batch, "write_result", real_write)
    summary = run(cfg)
    assert len(summary.skipped) == 1 and len(summary.done) == 2
    assert (outdir / names[0]).stat().st_mtime_ns == first_mtime
    done = [r["output"] for r in read_manifest(outdir / MANIFEST) if r["status"] == "done"]
    assert sorted(done) == names  # each file done exactly once over both runs


def test_interrupts_wait_until_an_output_and_its_manifest_line_are_written():
    # Python's own Ctrl-C handler, whatever this process inherited: a shell starts background
    # jobs with SIGINT ignored, and an ignored SIGINT stays ignored after the block
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    reached = []
    try:
        _interrupt_inside_deferred_block(reached)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert reached == [True]


def _interrupt_inside_deferred_block(reached: list) -> None:
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            # to the main thread itself: a process-directed signal may land on a worker thread
            # (torch's, tqdm's) and reach Python's handler only later
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            for _ in range(20):
                time.sleep(0.01)  # the handler runs here, in the main thread: held, not raised
            reached.append(True)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_killed_runs_temporary_is_removed_when_its_job_runs_again_and_only_then(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 2)
    outdir.mkdir()
    (outdir / ".g0_mask.png.k1ll3d.tmp").write_bytes(b"half")
    (outdir / ".g1_mask.png.sh4rd1.tmp").write_bytes(b"shard 1 is writing this")
    summary = run(config(indir, outdir, "refine=false", "shard=0/2"))
    assert [p.name for p in summary.done] == ["g0_mask.png"]
    assert [p.name for p in tmp_files(outdir)] == [".g1_mask.png.sh4rd1.tmp"]


@pytest.mark.slow  # seconds: full suite only
def test_overwrite_recomputes(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 1)
    run(config(indir, outdir, "refine=false"))
    assert len(run(config(indir, outdir, "refine=false", "overwrite=true")).done) == 1


# --- the manifest -----------------------------------------------------------------------------------


@pytest.mark.slow  # seconds: full suite only
def test_manifest_records_hash_timings_scales_and_final_loss(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 1, size=(64, 72))
    cfg = config(indir, outdir, "pyramid.min_side=32", "refiner.n_iters=3")
    run(cfg)
    (record,) = read_manifest(outdir / MANIFEST)
    assert record["status"] == "done" and record["output"] == "g0_mask.png"
    assert record["config_hash"] == config_hash(cfg) and len(record["config_hash"]) == 12
    assert record["scales"] == [[32, 36], [64, 72]]
    assert isinstance(record["final_loss"], float) and record["final_loss"] > 0
    assert set(record["seconds"]) == {"read", "inpaint", "write", "total"} and record["attempts"] == 1


def test_config_hash_ignores_where_and_how_but_not_what(tmp_path):
    base = config(tmp_path / "a", tmp_path / "b")
    assert config_hash(base) == config_hash(
        compose([f"model.path={MODEL}", "indir=x", "outdir=y", "shard=1/2", "progress=false", "devices=[cpu]"])
    )
    assert config_hash(base) != config_hash(config(tmp_path / "a", tmp_path / "b", "refine=false"))


def _append_lines(path: str, tag: int) -> None:
    manifest = Manifest(Path(path))
    for i in range(100):
        manifest.append({"writer": tag, "i": i, "pad": "x" * 6000})  # longer than a pipe buffer


def test_manifest_appends_from_several_processes_never_interleave(tmp_path):
    path = tmp_path / MANIFEST
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_lines, args=(str(path), tag)) for tag in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["writer"], r["i"]) for r in records) == [(t, i) for t in range(4) for i in range(100)]


# --- shards --------------------------------------------------------------------------------------------


def test_shards_split_the_sorted_list_round_robin():
    jobs = list(range(10))
    shards = [Shard.parse(f"{i}/3").select(jobs) for i in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert Shard.parse(None) is None
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="shard="):
            Shard.parse(bad)


def test_shard_devices():
    assert Shard(1, 4).devices(4) == ["cuda:1"]
    assert Shard(1, 4).devices(8) == ["cuda:2", "cuda:3"]
    assert Shard(3, 4).devices(2) == ["cuda:1"]


@pytest.mark.slow  # seconds: full suite only
def test_sharded_runs_together_do_every_file_once(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 5)
    done = [run(config(indir, outdir, "refine=false", f"shard={i}/2")).done for i in range(2)]
    assert sorted(p.name for d in done for p in d) == names
    assert {len(d) for d in done} == {2, 3}
    records = read_manifest(outdir / MANIFEST)
    assert sorted(r["output"] for r in records) == names and {r["shard"] for r in records} == {"0/2", "1/2"}


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


def sharded_sweep(tmp_path, n_good: int, *launcher_args: str):
    """A two-shard --multirun sweep over n_good good pairs and one broken mask: the sweep must
    fail (after both shards ran) while every good file is done exactly once, in one folder.
    Returns the manifest's records."""
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, n_good)
    (indir / "broken_mask.png").write_bytes(b"garbage")
    save(indir / "broken.png", photo())
    proc = lama_refine(
        "--multirun",
        *launcher_args,
        f"model.path={MODEL}",
        f"indir={indir}",
        f"outdir={outdir}",
        "progress=false",
        "shard=0/2,1/2",
        cwd=tmp_path,
    )
    assert proc.returncode != 0, proc.stderr  # one shard had a bad file: the sweep says so, after both ran
    assert "broken_mask.png" in proc.stdout + proc.stderr or "failed" in proc.stdout + proc.stderr
    assert sorted(p.name for p in outdir.glob("*.png")) == names  # one folder for all shards
    records = read_manifest(outdir / MANIFEST)
    assert sorted(r["output"] for r in records if r["status"] == "done") == names  # each file exactly once
    assert {r["shard"] for r in records} == {"0/2", "1/2"} and len({r["pid"] for r in records}) == 2
    assert [r["status"] for r in records].count("failed") == 1 and len(records) == len(names) + 1
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()  # logs stay in outdir
    return records


@pytest.mark.slow  # a subprocess
def test_joblib_launcher_with_two_shards_does_every_file_exactly_once(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sharded_sweep(tmp_path, 5, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "refine=false")


@pytest.mark.slow
def test_submitit_local_launcher_with_two_shards_does_every_file_exactly_once(tmp_path):
    """The SLURM path's engine (submitit) in its local mode: the same sweep as on a cluster."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    records = sharded_sweep(
        tmp_path,
        4,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "refiner.n_iters=2",
        "pyramid.min_side=12",
    )
    assert all(r["iterations"][1:] == [2] for r in records if r["status"] == "done")  # refined, 2 scales


# --- out of memory ---------------------------------------------------------------------------------------


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    )
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not a RuntimeError: a different problem


def tiny_inputs() -> Inputs:
    mask = torch.zeros(1, 1, 24, 32)
    mask[..., 5:12, 6:20] = 1
    return Inputs(torch.rand(1, 3, 24, 32), mask, 8)


def refining_inpainter(tmp_path, *extra) -> Inpainter:
    return build_inpainter(config(tmp_path, tmp_path / "o", *extra))


@pytest.mark.slow  # seconds: full suite only
def test_retry_after_oom_halves_px_budget_then_restores_it(tmp_path, monkeypatch):
    inpainter = refining_inpainter(tmp_path)
    budgets, released = [], []
    real_run = inpainter.run

    def oom_at_full_budget(image, mask):
        budgets.append(inpainter.pyramid.px_budget)
        if inpainter.pyramid.px_budget == 1_800_000:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_run(image, mask)

    monkeypatch.setattr(inpainter, "run", oom_at_full_budget)
    monkeypatch.setattr(batch, "release_memory", lambda: released.append(True))
    refinement, attempts = inpaint_with_retries(inpainter, tiny_inputs(), Path("x_mask.png"))
    assert budgets == [1_800_000, 900_000] and released == [True]
    assert attempts.count == 2 and attempts.changes == ["px_budget 1800000 -> 900000"]
    assert refinement.image.shape == (1, 3, 24, 32) and inpainter.pyramid.px_budget == 1_800_000


def test_oom_twice_is_a_failure_naming_the_file(tmp_path, monkeypatch):
    inpainter = refining_inpainter(tmp_path)

    def always_oom(image, mask):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes")

    monkeypatch.setattr(inpainter, "run", always_oom)
    with pytest.raises(InputError, match=r"x_mask.png: out of memory .*retried with px_budget 1800000 -> 900000"):
        inpaint_with_retries(inpainter, tiny_inputs(), Path("x_mask.png"))
    assert inpainter.pyramid.px_budget == 1_800_000


def test_plain_inference_has_no_smaller_budget_to_retry_with(tmp_path, monkeypatch):
    inpainter = refining_inpainter(tmp_path, "refine=false")
    calls = []

    def oom(image, mask):
        calls.append(1)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(inpainter, "run", oom)
    with pytest.raises(InputError, match="out of memory"):
        inpaint_with_retries(inpainter, tiny_inputs(), Path("x"))
    assert calls == [1]


def test_other_errors_are_not_retried(tmp_path, monkeypatch):
    inpainter = refining_inpainter(tmp_path)
    monkeypatch.setattr(inpainter, "run", lambda image, mask: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        inpaint_with_retries(inpainter, tiny_inputs(), Path("x"))


@pytest.mark.slow  # seconds: full suite only
def test_batch_goes_on_after_oom_and_records_the_retry(tmp_path, monkeypatch, caplog):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    save(indir / "a.png", photo(24, 32))
    save(indir / "a_mask.png", box(24, 32))
    save(indir / "b.png", photo(24, 40))  # b: out of memory whatever the budget
    save(indir / "b_mask.png", box(24, 40))
    save(indir / "c.png", photo(24, 32))
    save(indir / "c_mask.png", box(24, 32))
    real_run = Inpainter.run
    tried = []

    def flaky(self, image, mask):
        tried.append((image.shape[-1], self.pyramid.px_budget))
        if image.shape[-1] == 40 or (len(tried) == 1 and self.pyramid.px_budget == 1_800_000):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real_run(self, image, mask)

    monkeypatch.setattr(Inpainter, "run", flaky)
    with caplog.at_level(logging.WARNING, logger="lama_refine"):
        summary = run(config(indir, outdir))
    assert sorted(p.name for p in summary.done) == ["a_mask.png", "c_mask.png"]
    assert summary.failed[0][0].name == "b_mask.png" and "out of memory" in summary.failed[0][1]
    assert tried == [(32, 1_800_000), (32, 900_000), (40, 1_800_000), (40, 900_000), (32, 1_800_000)]
    assert any(
        "a_mask.png: out of memory; retrying with px_budget 1800000 -> 900000" in r.getMessage() for r in caplog.records
    )
    records = {Path(r["mask"]).name: r for r in read_manifest(outdir / MANIFEST)}
    assert (
        records["a_mask.png"]["retries"] == ["px_budget 1800000 -> 900000"] and records["a_mask.png"]["attempts"] == 2
    )
    assert records["b_mask.png"]["status"] == "failed" and records["c_mask.png"]["attempts"] == 1


@pytest.mark.parametrize(
    "preset, plugin, expected",
    [
        ("local_shards", "hydra_plugins.hydra_joblib_launcher", ["JoblibLauncher", "prefer: processes"]),
        (
            "slurm_shards",
            "hydra_plugins.hydra_submitit_launcher",
            ["SlurmLauncher", "gpus_per_node: 1", "max_num_timeout: 3"],
        ),
    ],
)
@pytest.mark.slow  # a subprocess
def test_launcher_presets_compose(tmp_path, preset, plugin, expected):
    pytest.importorskip(plugin)
    proc = lama_refine(
        f"hydra/launcher={preset}", "indir=x", "outdir=y", "--cfg", "hydra", "--package", "hydra.launcher", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert all(line in proc.stdout for line in expected), proc.stdout


# --- reruns under another config ------------------------------------------------------------------


def test_a_rerun_redoes_only_outputs_made_under_another_config(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 2)
    plain = config(indir, outdir, "refine=false")
    assert len(run(plain).done) == 2
    again = run(plain)
    assert len(again.skipped) == 2 and not again.done and not again.redone

    dilated = config(indir, outdir, "refine=false", "mask.dilate=2")
    before = {n: (outdir / n).read_bytes() for n in names}
    changed = run(dilated)
    assert len(changed.redone) == 2 and not changed.skipped and not changed.done
    assert "2 redone (photo changed: 0, mask changed: 0, model changed: 0, settings changed: 2)" in changed.report()
    assert all((outdir / n).read_bytes() != before[n] for n in names)  # replaced, with the new config's result
    records = [r for r in read_manifest(outdir / MANIFEST) if r["status"] == "done"]
    assert [r["replaced_config_hash"] for r in records[-2:]] == [config_hash(plain)] * 2
    assert {r["config_hash"] for r in records[-2:]} == {config_hash(dilated)}
    assert not tmp_files(outdir)
    assert len(run(dilated).skipped) == 2  # and now they are this config's


def test_overwrite_never_keeps_outputs_whatever_made_them_and_true_redoes_all(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 2)
    run(config(indir, outdir, "refine=false"))
    kept = run(config(indir, outdir, "refine=false", "mask.dilate=2", "overwrite=never"))
    assert len(kept.skipped) == 2 and not kept.redone
    redone = run(config(indir, outdir, "refine=false", "overwrite=true"))
    assert len(redone.done) == 2 and not redone.skipped


def test_outputs_without_a_manifest_line_are_kept_with_one_note(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 3)
    run(config(indir, outdir, "refine=false"))
    (outdir / MANIFEST).unlink()  # as an older version left them
    summary = run(config(indir, outdir, "refine=false", "mask.dilate=2"))
    assert len(summary.skipped) == 3 and not summary.redone
    notes = [n for _, n in summary.notes if "no line in" in n]
    assert len(notes) == 1 and notes[0].startswith("3 existing output(s)") and "overwrite=true" in notes[0]


def test_a_damaged_output_of_the_same_config_is_made_again(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 2)
    cfg = config(indir, outdir, "refine=false")
    run(cfg)
    whole = (outdir / names[0]).read_bytes()
    (outdir / names[0]).write_bytes(whole[: len(whole) // 2])
    summary = run(cfg)
    assert [p.name for p in summary.done] == [names[0]] and len(summary.skipped) == 1
    assert (outdir / names[0]).read_bytes() == whole


@pytest.mark.parametrize("value, mode", [(False, False), (True, True), ("never", "never"), ("NEVER", None), (2, None)])
def test_overwrite_modes(value, mode):
    if mode is None:
        with pytest.raises(ValueError, match="overwrite="):
            batch.overwrite_mode(value)
    else:
        assert batch.overwrite_mode(value) == mode


def test_config_hash_is_unchanged_by_switches_added_later_while_they_are_off(tmp_path):
    # The hash main computed before refiner.stop / refiner.warm_start existed, for this config:
    # outputs made then must not count as "made under another config" now.
    cfg = config(tmp_path / "a", tmp_path / "b", "refine=false")
    with open_dict(cfg):
        del cfg.refiner["stop"], cfg.refiner["warm_start"], cfg["debug"], cfg["image"], cfg["out"], cfg.mask["file"]
    assert config_hash(cfg) == config_hash(config(tmp_path / "a", tmp_path / "b", "refine=false"))
    assert config_hash(config(tmp_path / "a", tmp_path / "b", "refiner.warm_start=true")) != config_hash(
        config(tmp_path / "a", tmp_path / "b")
    )
    assert config_hash(config(tmp_path / "a", tmp_path / "b", "refiner.stop.patience=2")) != config_hash(
        config(tmp_path / "a", tmp_path / "b")
    )


def test_config_hash_ignores_the_allocator_and_malloc_trim(tmp_path):
    """perf.allocator and perf.malloc_trim only decide where memory lives (outputs bit-identical):
    the default becoming auto, or another allocator, keeps outputs made under the old default."""

    def hashed(*overrides):
        return config_hash(config(tmp_path / "a", tmp_path / "b", *overrides))

    old_default = config(tmp_path / "a", tmp_path / "b")  # as main wrote it: allocator null, no malloc_trim
    with open_dict(old_default):
        old_default.perf.allocator = None
        del old_default.perf["malloc_trim"]
    assert (
        hashed()
        == hashed("perf.allocator=auto")
        == hashed("perf.allocator=glibc")
        == hashed("perf.allocator=tcmalloc")
        == hashed("perf.malloc_trim=true")
        == config_hash(old_default)
    )
    assert hashed("perf.tile_rows=null") != hashed()  # other perf keys still count


# ---------------------------------------------------------------------------------------------
# What a newcomer sees (issue 24)
# ---------------------------------------------------------------------------------------------


def test_the_last_line_says_where_the_results_are_and_what_names_them(tmp_path, caplog):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 2)
    with caplog.at_level(logging.INFO, logger="lama_refine"):
        run(config(indir, outdir, "refine=false"))
    last = [r.getMessage() for r in caplog.records if r.name == "lama_refine"][-1]
    assert last == (
        f"results: 2 in {outdir}, e.g. {outdir / names[0]} (named after their masks, as LaMa names "
        "them; indir=photos maskdir=masks names them after the photos)"
    )
    masks = tmp_path / "masks"  # the same photos, their masks in a folder of their own: named after the photos
    masks.mkdir()
    for name in names:
        (indir / name).rename(masks / name.replace("_mask", ""))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lama_refine"):
        run(config(indir, tmp_path / "out2", "refine=false", f"maskdir={masks}"))
    last = [r.getMessage() for r in caplog.records if r.name == "lama_refine"][-1]
    assert last.startswith(f"results: 2 in {tmp_path / 'out2'}, e.g. {tmp_path / 'out2' / 'g0.png'}")
    assert last.endswith("(named after the photos)")


@pytest.mark.parametrize(
    "files, says",
    [
        (["p.jpg", "p_mask.jpg"], "no *mask*.png masks under indir="),
        (["p.jpg", "q.png"], "no masks under indir="),
    ],
)
def test_a_folder_with_no_png_masks_but_images_is_one_error_not_0_jobs(tmp_path, files, says):
    from lama_refine.errors import UserError

    indir = tmp_path / "in"
    for name in files:
        save(indir / name, box() if "mask" in name else photo())
    with pytest.raises(UserError, match=re.escape(says)) as error:
        run(config(indir, tmp_path / "out"))
    assert "\n" not in str(error.value) and error.value.exit_code == 2
    (tmp_path / "empty").mkdir()
    assert run(config(tmp_path / "empty", tmp_path / "out")).done == []  # an empty folder stays a run of nothing


def test_an_inverted_mask_fails_its_file_and_the_batch_goes_on(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good = good_pairs(indir, 1)
    save(indir / "inv.png", photo())
    save(indir / "inv_mask.png", 255 - box())
    summary = run(config(indir, outdir, "refine=false"))
    assert [p.name for p in summary.done] == good and len(summary.failed) == 1
    assert "inv_mask.png: the hole covers" in summary.failed[0][1] and "mask.invert=true" in summary.failed[0][1]
    summary = run(config(indir, tmp_path / "out2", "refine=false", "mask.invert=true"))
    assert len(summary.failed) == 1 and "g0_mask.png" in summary.failed[0][1]  # now the other one is inverted
    assert "inv_mask.png" in {p.name for p in summary.done}


def test_config_hash_is_unchanged_by_the_mask_checks_at_their_defaults(tmp_path):
    # mask.max_hole and mask.lossy_threshold came later: outputs made before them are kept on a rerun
    cfg = config(tmp_path / "a", tmp_path / "b")
    with open_dict(cfg):
        del cfg.mask["max_hole"], cfg.mask["lossy_threshold"]
    assert config_hash(cfg) == config_hash(config(tmp_path / "a", tmp_path / "b"))
    assert config_hash(config(tmp_path / "a", tmp_path / "b", "mask.lossy_threshold=0")) != config_hash(cfg)
    assert config_hash(config(tmp_path / "a", tmp_path / "b", "devices=cpu")) == config_hash(cfg)
