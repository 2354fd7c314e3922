"""Reruns (issue 21): an output is kept only if its photo, mask, model weights, settings and results
version are unchanged; a job is done once however many runs share the outdir (claims)."""

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN
from test_runner import box, config, good_pairs, photo, save, tmp_files

import lama_refine.batch.provenance as provenance
from lama_refine.app.cli import run
from lama_refine.batch.claims import CLAIMS, Claims, claim_name
from lama_refine.batch.provenance import RESULTS_VERSION, DigestCache, Stamp, model_digest
from lama_refine.batch.runner import MANIFEST, config_hash, legacy_config_hash, read_manifest
from lama_refine.batch.sweep import RESULT_NEUTRAL_KEYS
from lama_refine.config import compose

OTHER_MODEL = GOLDEN / "odd_nonsquare_2scales"  # same architecture as test_batch.MODEL, other weights


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMA_REFINE_HOME", str(tmp_path / "home"))


def model_copy(folder: Path, case: str = "three_scales") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(GOLDEN / case / "generator.safetensors", folder / "model.safetensors")
    shutil.copy(GOLDEN / case / "generator.yaml", folder / "model.yaml")
    return folder / "model.safetensors"


def cfg_with(indir, outdir, model, *extra):
    return config(indir, outdir, "refine=false", *extra, f"model.path={model}")


def claims_left(outdir: Path) -> list[Path]:
    return list((outdir / CLAIMS).glob("*.claim")) if (outdir / CLAIMS).is_dir() else []


# --- what a rerun compares --------------------------------------------------------------------------


@pytest.mark.slow  # three or more batch runs: seconds
def test_a_replaced_photo_or_mask_is_redone_and_the_summary_says_why(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 3)
    model = model_copy(tmp_path / "m")
    cfg = cfg_with(indir, outdir, model)
    assert len(run(cfg).done) == 3
    before = {n: (outdir / n).read_bytes() for n in names}
    save(indir / "g0.png", photo())  # another photo under the same name
    save(indir / "g1_mask.png", box(fill=0) | np.pad(np.full((4, 4), 255, np.uint8), ((2, 18), (2, 26))))
    summary = run(cfg)
    assert sorted(p.name for p in summary.redone) == names[:2] and [p.name for p in summary.skipped] == names[2:]
    assert "2 redone (photo changed: 1, mask changed: 1, model changed: 0, settings changed: 0)" in summary.report()
    assert (outdir / names[0]).read_bytes() != before[names[0]] and (outdir / names[1]).read_bytes() != before[names[1]]
    last = {r["output"]: r for r in read_manifest(outdir / MANIFEST)}
    assert last[names[0]]["redone"] == ["photo"] and last[names[1]]["redone"] == ["mask"]
    assert not tmp_files(outdir) and not claims_left(outdir)
    assert len(run(cfg).skipped) == 3  # and now they are up to date


@pytest.mark.slow  # three or more batch runs: seconds
def test_other_weights_at_the_same_path_are_redone_the_same_weights_elsewhere_are_kept(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 2)
    model = model_copy(tmp_path / "m")
    assert len(run(cfg_with(indir, outdir, model)).done) == 2
    moved = model_copy(tmp_path / "elsewhere")  # same bytes, another path: kept
    kept = run(cfg_with(indir, outdir, moved))
    assert len(kept.skipped) == 2 and not kept.redone
    model_copy(tmp_path / "m", "odd_nonsquare_2scales")  # retrained, written over the same file
    changed = run(cfg_with(indir, outdir, model))
    assert len(changed.redone) == 2 and changed.redone_because == {"model": 2}
    assert "model changed: 2" in changed.report()


@pytest.mark.slow  # three or more batch runs: seconds
def test_record_fields_and_settings_still_count(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 1)
    model = model_copy(tmp_path / "m")
    cfg = cfg_with(indir, outdir, model)
    run(cfg)
    (line,) = read_manifest(outdir / MANIFEST)
    assert line["results_version"] == RESULTS_VERSION and line["config_hash"] == config_hash(cfg)
    assert line["model_sha256"] == model_digest(model)
    assert line["image_stamp"]["sha256"] == provenance.file_sha256(indir / "g0.png")
    assert line["mask_stamp"]["size"] == (indir / "g0_mask.png").stat().st_size
    changed = run(cfg_with(indir, outdir, model, "mask.dilate=1"))
    assert changed.redone_because == {"settings": 1}


def test_a_touched_or_copied_photo_is_rehashed_and_kept_an_untouched_one_is_not_read(tmp_path, monkeypatch):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 2)
    cfg = cfg_with(indir, outdir, model_copy(tmp_path / "m"))
    run(cfg)
    os.utime(indir / "g0.png", ns=(1, 1))  # same bytes, another mtime: re-hashed, kept
    hashed = []
    real = provenance.file_sha256
    monkeypatch.setattr(provenance, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    summary = run(cfg)
    assert len(summary.skipped) == 2 and not summary.redone
    assert "g0.png" in hashed and "g1.png" not in hashed and "g1_mask.png" not in hashed
    verified = [r for r in read_manifest(outdir / MANIFEST) if r["status"] == "verified"]
    assert [(r["output"], r["image_stamp"]["mtime_ns"]) for r in verified] == [("g0_mask.png", 1)]
    hashed.clear()
    assert len(run(cfg).skipped) == 2 and not hashed  # the new mtime is trusted from now on


def test_a_changed_results_version_redoes_everything(tmp_path, monkeypatch):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 2)
    cfg = cfg_with(indir, outdir, model_copy(tmp_path / "m"))
    run(cfg)
    monkeypatch.setattr("lama_refine.batch.runner.RESULTS_VERSION", RESULTS_VERSION + 1)
    summary = run(cfg)
    assert summary.redone_because == {"version": 2} and "results version changed: 2" in summary.report()


@pytest.mark.slow  # three or more batch runs: seconds
def test_overwrite_never_keeps_a_replaced_photo_and_true_redoes_everything(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 2)
    model = model_copy(tmp_path / "m")
    run(cfg_with(indir, outdir, model))
    save(indir / "g0.png", photo())
    never = run(cfg_with(indir, outdir, model, "overwrite=never"))
    assert len(never.skipped) == 2 and not never.redone and not never.done
    everything = run(cfg_with(indir, outdir, model, "overwrite=true"))
    assert len(everything.done) == 2 and not everything.skipped


def legacy_manifest(outdir: Path, cfg) -> None:
    """Rewrite the manifest as main wrote it before digests: no results_version, stamps or model
    digest, and the config hash of that time."""
    lines = []
    for record in read_manifest(outdir / MANIFEST):
        for key in ("results_version", "model_sha256", "image_stamp", "mask_stamp"):
            record.pop(key)
        record["config_hash"] = legacy_config_hash(cfg)
        lines.append(json.dumps(record))
    (outdir / MANIFEST).write_text("\n".join(lines) + "\n")


@pytest.mark.slow  # three or more batch runs: seconds
def test_an_old_format_manifest_keeps_a_finished_folder_with_one_note(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 3)
    cfg = cfg_with(indir, outdir, model_copy(tmp_path / "m"))
    run(cfg)
    legacy_manifest(outdir, cfg)
    mtimes = {n: (outdir / n).stat().st_mtime_ns for n in names}
    summary = run(cfg)
    assert len(summary.skipped) == 3 and not summary.redone and not summary.done
    notes = [n for _, n in summary.notes if "older lama-refine" in n]
    assert len(notes) == 1 and notes[0].startswith("3 existing output(s)") and "overwrite=true" in notes[0]
    assert {n: (outdir / n).stat().st_mtime_ns for n in names} == mtimes
    redone = run(cfg_with(indir, outdir, cfg.model.path, "mask.dilate=1"))  # old lines still judge settings
    assert redone.redone_because == {"settings": 3}


def test_the_legacy_hash_is_the_one_main_recorded():
    # measured with main's batch.config_hash (before this change) on this config: a finished
    # folder of that version must keep its outputs
    cfg = compose(["model.path=demo", "indir=x", "outdir=y", "refine=false"])
    assert legacy_config_hash(cfg) == "f012b1caed2b"


# --- keys that do not change an output, and the devices ---------------------------------------------


def test_one_list_of_result_neutral_keys_for_the_hash_and_the_sweep_folders(tmp_path):
    assert RESULT_NEUTRAL_KEYS is provenance.RESULT_NEUTRAL_KEYS
    base = config(tmp_path / "a", tmp_path / "b")
    changed = {
        "outdir": "outdir=elsewhere",
        "out": "out=x.png",
        "overwrite": "overwrite=true",
        "progress": "progress=true",
        "shard": "shard=1/2",
        "manifest": "manifest=false",
        "debug": "debug=true",
        "trace": "trace=t",
    }
    assert set(changed) == set(RESULT_NEUTRAL_KEYS)
    for override in changed.values():
        assert config_hash(config(tmp_path / "a", tmp_path / "b", override)) == config_hash(base), override


def test_devices_count_by_their_kind_only(tmp_path):
    def hashed(*overrides):
        return config_hash(config(tmp_path / "a", tmp_path / "b", *overrides))

    gpu = hashed("devices=[cuda:0]")
    assert gpu == hashed("devices=[cuda:1]") == hashed("devices=[cuda:0,cuda:1]") == hashed("refiner.gpu_ids=2")
    assert gpu != hashed("devices=[cpu]") == hashed("devices=[cpu,cpu]")
    if not __import__("torch").cuda.is_available():
        assert hashed() == hashed("devices=[cpu]")  # unset: where it runs


# --- the model digest and its cache -----------------------------------------------------------------


def test_model_digest_counts_weights_and_architecture_not_the_path(tmp_path):
    a, b = model_copy(tmp_path / "a"), model_copy(tmp_path / "b")
    cache = DigestCache(tmp_path / "cache.json")
    assert model_digest(a, cache=cache) == model_digest(b, cache=cache)
    (tmp_path / "b" / "model.yaml").write_text(
        (tmp_path / "b" / "model.yaml").read_text().replace("n_blocks: 3", "n_blocks: 2")
    )
    assert model_digest(a, cache=cache) != model_digest(b, cache=cache)


def test_digest_cache_skips_rehashing_and_survives_a_corrupt_file(tmp_path, monkeypatch):
    model = model_copy(tmp_path / "m")
    path = tmp_path / "home" / "digests.json"
    first = DigestCache(path).digest(model)
    monkeypatch.setattr(provenance, "file_sha256", lambda p: pytest.fail("hashed again"))
    assert DigestCache(path).digest(model) == first
    monkeypatch.undo()
    path.write_text('{"half": ')  # a corrupt cache is an empty one, and is rewritten whole
    assert DigestCache(path).digest(model) == first
    assert str(model.resolve()) in json.loads(path.read_text())
    os.utime(model, ns=(5, 5))  # a new mtime: hashed again, and the entry replaced
    assert DigestCache(path).digest(model) == first
    assert json.loads(path.read_text())[str(model.resolve())]["mtime_ns"] == 5


def _digest_many(path: str, files: list[str], out: str) -> None:
    cache = DigestCache(Path(path))
    Path(out).write_text(json.dumps([cache.digest(Path(f)) for f in files]))


def test_digest_cache_with_concurrent_writers_stays_readable_and_right(tmp_path):
    files = []
    for i in range(6):
        f = tmp_path / f"w{i}.bin"
        f.write_bytes(os.urandom(200_000))
        files.append(str(f))
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=_digest_many, args=(str(tmp_path / "c.json"), files[k:] + files[:k], str(tmp_path / f"r{k}.json"))
        )
        for k in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    truth = [provenance.file_sha256(Path(f)) for f in files]
    for k in range(4):
        assert json.loads((tmp_path / f"r{k}.json").read_text()) == truth[k:] + truth[:k]
    cached = json.loads((tmp_path / "c.json").read_text())  # whole JSON, whichever writer came last
    assert all(cached[str(Path(f).resolve())]["sha256"] == provenance.file_sha256(Path(f)) for f in cached)
    assert not list(tmp_path.glob(".c.json.*"))


def test_stamp_trusts_size_and_mtime(tmp_path, monkeypatch):
    f = tmp_path / "p.bin"
    f.write_bytes(b"abc")
    stamp = Stamp.of(f)
    monkeypatch.setattr(provenance, "file_sha256", lambda p: pytest.fail("read although size and mtime match"))
    assert stamp.still_matches(f)
    monkeypatch.undo()
    f.write_bytes(b"abd")
    os.utime(f, ns=(stamp.mtime_ns, stamp.mtime_ns))  # same size and mtime: trusted, as make and git do
    assert stamp.still_matches(f)
    os.utime(f, ns=(1, 1))
    assert not stamp.still_matches(f)
    assert not stamp.still_matches(tmp_path / "gone")


# --- claims -------------------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def plant_claim(outdir: Path, output: str, host: str, pid: int, age_s: float = 0.0) -> Path:
    path = outdir / CLAIMS / claim_name(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "run": "other", "token": "t", "start": time.time()}))
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


@pytest.mark.slow  # three or more batch runs: seconds
def test_a_claim_left_by_a_killed_run_is_taken_over(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 2)
    plant_claim(outdir, names[0], socket.gethostname(), dead_pid())
    plant_claim(outdir, names[1], "another-host", 1, age_s=3600)  # another host, no heartbeat for an hour
    summary = run(cfg_with(indir, outdir, model_copy(tmp_path / "m")))
    assert sorted(p.name for p in summary.done) == names and not summary.claimed
    assert not claims_left(outdir)


def test_a_live_claim_is_skipped_and_counted(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 3)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = plant_claim(outdir, names[0], socket.gethostname(), sleeper.pid)
        theirs = plant_claim(outdir, names[1], "another-host", 1)  # fresh heartbeat
        summary = run(cfg_with(indir, outdir, model_copy(tmp_path / "m")))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [p.name for p in summary.done] == names[2:]
    assert sorted(p.name for p in summary.claimed) == names[:2]
    assert "1 done, 0 skipped (output exists), 2 claimed by another run, 0 failed" in summary.report()
    assert mine.exists() and theirs.exists() and not (outdir / names[0]).exists()


@pytest.mark.slow  # three or more batch runs: seconds
def test_claims_are_released_when_a_job_fails_and_heartbeats_refresh_them(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good_pairs(indir, 1)
    (indir / "bad.png").write_bytes(b"not a png")
    save(indir / "bad_mask.png", box())
    summary = run(cfg_with(indir, outdir, model_copy(tmp_path / "m")))
    assert len(summary.failed) == 1 and len(summary.done) == 1 and not claims_left(outdir)

    with Claims(tmp_path / "claims", heartbeat_s=0.05) as claims:
        path = claims.acquire("a/b.png")
        os.utime(path, (1, 1))
        time.sleep(0.3)
        assert path.stat().st_mtime > time.time() - 5 and claims.owns(path)
        assert claims.acquire("a/b.png") is None  # the same job, claimed twice: held (own pid is never stale)
    assert not path.exists()


def test_a_run_whose_claim_was_taken_over_does_not_write(tmp_path, monkeypatch):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 1)
    real_owns = Claims.owns
    monkeypatch.setattr(Claims, "owns", lambda self, path: False)
    summary = run(cfg_with(indir, outdir, model_copy(tmp_path / "m")))
    assert [p.name for p in summary.claimed] == names and not (outdir / names[0]).exists()
    monkeypatch.setattr(Claims, "owns", real_owns)
    assert not read_manifest(outdir / MANIFEST)


@pytest.mark.slow  # two subprocesses
def test_two_runs_started_at_once_do_each_job_once(tmp_path):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    names = good_pairs(indir, 8)
    model = model_copy(tmp_path / "m")
    args = [f"indir={indir}", f"outdir={outdir}", f"model.path={model}", "refine=false", "progress=false"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lama_refine.app.cli", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    records = read_manifest(outdir / MANIFEST)  # every line parses
    assert sorted(r["output"] for r in records) == names and {r["status"] for r in records} == {"done"}
    assert sorted(p.name for p in outdir.glob("*.png")) == names
    assert not tmp_files(outdir) and not claims_left(outdir)
    done = [
        int(line.split(" done,")[0].rsplit(" ", 1)[-1])
        for log in logs
        for line in log.splitlines()
        if " done, " in line and "failed" in line
    ]
    assert sum(done) == 8, logs
