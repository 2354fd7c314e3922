"""README's SLURM sweep against a real one-node SLURM: Debian's slurmctld, slurmd, slurmdbd (with
MariaDB, so `sacct` gives real job states) and munge, started by tools/slurm_local.py for this
module and stopped at its end, with no daemon left. Then the faults cluster users meet: a shard
preempted mid-run, a shard out of time, a cancelled job, a bad photo, no accounting.

Without root or the packages these tests skip, except under CI=true, where they fail: CI must run
them (.ci/run installs the packages). Set LAMA_REFINE_SLURM_TRANSCRIPT=FILE to keep the `sinfo`,
`squeue` and `sacct` they saw.
"""

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lama_refine.batch.runner as batch
from lama_refine.batch.runner import MANIFEST, Shard, read_manifest
from lama_refine.batch.slurm import ShardsFailed, collect, shard_name

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("slurm_local", REPO / "tools" / "slurm_local.py")
slurm_local = importlib.util.module_from_spec(_spec)
sys.modules["slurm_local"] = slurm_local  # its dataclass looks itself up there
_spec.loader.exec_module(slurm_local)

# README's command, verbatim but for the partition, the model (the built-in demo) and the number
# of shards; the resource numbers this 2-core, GPU-less node can give follow it.
README_SWEEP = (
    "lama-refine --multirun hydra/launcher=slurm_shards hydra.launcher.partition={partition} "
    "indir={indir} outdir={outdir} shard=$(seq -s, -f '%g/{n}' 0 {last})"
)
RESOURCES = ("hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1")
# Two scales of 15 iterations on 96x96 photos: a shard takes seconds, long enough to be caught mid-run.
SLOWER = ("pyramid.min_side=48", "refiner.n_iters=15")
SIZE = 96


# --- the cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    problem = None
    if os.geteuid() != 0:
        problem = "a local SLURM needs root"
    elif missing := slurm_local.missing_programs():
        problem = f"missing {', '.join(missing)}: apt-get install {' '.join(slurm_local.PACKAGES)}"
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the SLURM tests must run in CI, but {problem}")
        pytest.skip(problem)
    c = slurm_local.Cluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    try:
        yield c
    finally:
        c.stop()
    assert not c.running() and not c.members()  # no daemon, job or job step left


def record(title: str, text: str) -> None:
    """Keep what SLURM said, for the record (LAMA_REFINE_SLURM_TRANSCRIPT) and pytest's -s."""
    block = f"$ {title}\n{text.rstrip()}\n\n"
    print(block)
    path = os.environ.get("LAMA_REFINE_SLURM_TRANSCRIPT")
    if path:
        with open(path, "a") as f:
            f.write(block)


def photos(indir: Path, n: int, size: int = SIZE) -> list[str]:
    """n LaMa-layout photos with a box hole each; returns the output names."""
    indir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    y, x = np.mgrid[0:size, 0:size]
    names = []
    for i in range(n):
        image = np.stack([x * 2 + i, y * 2, x + y], -1) + rng.integers(0, 40, (size, size, 3))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(indir / f"p{i:03d}.png")
        mask = np.zeros((size, size), np.uint8)
        mask[size // 3 : size // 3 * 2, size // 4 + i % 8 : size // 2 + i % 8] = 255
        Image.fromarray(mask).save(indir / f"p{i:03d}_mask.png")
        names.append(f"p{i:03d}_mask.png")
    return names


def sweep(
    cluster,
    tmp_path: Path,
    n: int,
    *extra: str,
    partition: str = slurm_local.PARTITION,
    resources=RESOURCES,
    env: dict | None = None,
) -> subprocess.Popen:
    """README's sweep over tmp_path/photos into tmp_path/out, as a user types it (bash, `$(seq ...)`)."""
    line = README_SWEEP.format(partition=partition, indir=tmp_path / "photos", outdir=tmp_path / "out", n=n, last=n - 1)
    script = f'lama-refine() {{ "{sys.executable}" -m lama_refine.app.cli "$@"; }}\n' + " ".join(
        [line, *resources, "progress=false", *extra]
    )
    env = {**cluster.env(), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.Popen(
        ["bash", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the sweep did not end within {timeout:.0f} s:\n{out}\n{err}")
    return out + err


def wait_for(check, timeout: float, what: str):
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def jobs(cluster) -> dict[str, tuple[str, str]]:
    """squeue's jobs, array tasks one by one: id -> (state, reason)."""
    out = cluster.run("squeue", "-h", "-r", "-o", "%i|%T|%r").stdout
    return {i: (s, r) for i, s, r in (line.split("|") for line in out.splitlines() if line.strip())}


def first_done(outdir: Path, shard: str):
    """True once the manifest has a finished output of `shard`."""
    return any(r["status"] == "done" and r["shard"] == shard for r in read_manifest(outdir / MANIFEST))


def running_task(cluster, index: int) -> str:
    """The id of the sweep's job `index` once it runs (`12_1`; a sweep of one job is no array: `12`)."""
    return wait_for(
        lambda: next(
            (i for i, (s, _) in jobs(cluster).items() if (i.endswith(f"_{index}") or "_" not in i) and s == "RUNNING"),
            None,
        ),
        120,
        f"the sweep's job {index} to run",
    )


def release(cluster, job: str, *changes: str) -> None:
    """SLURM holds a requeued job for two minutes (Reason=BeginTime); let it start again at once."""
    wait_for(lambda: jobs(cluster).get(job, ("", ""))[0] == "PENDING", 120, f"{job} to be pending again")
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now", *changes)


def sacct(cluster, job: str) -> str:
    """sacct of `job`, every attempt, once SLURM has recorded its end (submitit sees the result
    file before the accounting has the job's final state)."""

    def settled():
        out = cluster.run(
            "sacct", "-j", job, "-X", "--duplicates", "-o", "JobID,JobName,Partition,State,ExitCode,Elapsed,NodeList"
        ).stdout
        return None if re.search(r"\b(RUNNING|PENDING|COMPLETING)\b", out) else out

    return wait_for(settled, 60, f"the accounting of job {job} to record its end")


def done_once(outdir: Path, names: list[str]) -> list[dict]:
    """Every output exists, and the manifest has exactly one `done` line for it."""
    assert sorted(p.name for p in outdir.glob("*.png")) == names
    records = read_manifest(outdir / MANIFEST)
    assert Counter(r["output"] for r in records if r["status"] == "done") == Counter(names)
    return records


def array_of(output: str) -> str:
    return re.search(r"submitted SLURM job (\d+)", output).group(1)


# --- README's sweep -------------------------------------------------------------------------


@pytest.mark.slow
def test_readmes_slurm_sweep_runs_on_a_real_cluster(cluster, tmp_path):
    names = photos(tmp_path / "photos", 12)
    outdir = tmp_path / "out"
    record("sinfo", cluster.run("sinfo").stdout)
    proc = sweep(cluster, tmp_path, 4)
    wait_for(lambda: any(s == "RUNNING" for s, _ in jobs(cluster).values()), 120, "the sweep's jobs to run")
    record("squeue  # README's sweep, 4 shards, running", cluster.run("squeue").stdout)
    output = finish(proc)
    assert proc.returncode == 0, output
    records = done_once(outdir, names)
    assert len(records) == 12 and {r["shard"] for r in records} == {"0/4", "1/4", "2/4", "3/4"}
    assert len({r["pid"] for r in records}) == 4
    # README: "each shard's summary is in its log under outdir/.lama-refine/multirun/"
    logs = sorted((outdir / ".lama-refine" / "multirun").glob("*/[0-9]*/lama-refine.log"))
    assert len(logs) == 4
    assert all("3 done, 0 skipped (output exists), 0 failed" in log.read_text() for log in logs)
    array = array_of(output)
    accounting = sacct(cluster, array)
    record(f"sacct -j {array} -X --duplicates  # the finished sweep", accounting)
    states = re.findall(rf"^{array}_(\d)\s+\S+\s+{slurm_local.PARTITION}\s+(\S+)", accounting, re.M)
    assert sorted(states) == [(str(i), "COMPLETED") for i in range(4)], accounting


@pytest.mark.slow
def test_the_sbatch_script_asks_for_what_readme_says(cluster, tmp_path):
    """README's command with only the partition changed: one GPU, 8 CPUs, 32 GB and 24 h per shard.
    This node has no GPU, so sbatch refuses it, in one message, and the script it got is kept."""
    photos(tmp_path / "photos", 2)
    proc = sweep(cluster, tmp_path, 16, resources=())
    output = finish(proc, 120)
    assert proc.returncode == 1 and "sbatch refused the sweep's job array" in output, output
    assert "Traceback" not in output and not jobs(cluster)
    script = next((tmp_path / "out").glob(".lama-refine/multirun/*/.submitit/.submission_file_*.sh")).read_text()
    for line in (
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=32GB",
        "--time=1440",
        "--partition=gpu",
        "--array=0-15%16",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {line}\n" in script, script


@pytest.mark.parametrize(
    "executor, visible, expected",
    [
        ("slurm", 1, ["cuda:0"]),  # slurm_shards' gpus_per_node=1: the job's one GPU
        ("slurm", 2, ["cuda:0", "cuda:1"]),  # gpus_per_node=2: both, not shard 5's share of a machine
        (None, 2, ["cuda:1"]),  # shards sharing one 2-GPU machine: 5 % 2
        ("local", 32, ["cuda:10", "cuda:11"]),  # submitit_local: 16 shards on one 32-GPU machine
    ],
)
def test_the_gpus_each_shard_picks(monkeypatch, executor, visible, expected):
    from lama_refine.app.cli import shard_config
    from lama_refine.config import compose

    if executor is None:
        monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    else:
        monkeypatch.setenv("SUBMITIT_EXECUTOR", executor)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: visible)
    cfg = compose(["indir=x", "outdir=y", "shard=5/16"])
    assert list(shard_config(cfg, Shard(5, 16)).devices) == expected
    assert list(shard_config(compose(["indir=x", "outdir=y", "devices=[cpu]"]), Shard(5, 16)).devices) == ["cpu"]


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_preempted_shard_resumes_and_redoes_no_finished_output(cluster, tmp_path):
    names = photos(tmp_path / "photos", 12)
    outdir = tmp_path / "out"
    proc = sweep(cluster, tmp_path, 2, *SLOWER)
    task = running_task(cluster, 1)
    wait_for(lambda: first_done(outdir, "1/2"), 180, "shard 1/2's first output")
    cluster.run("scontrol", "requeue", task)  # what a preemption with PreemptMode=REQUEUE does
    release(cluster, task)
    output = finish(proc)
    assert proc.returncode == 0, output
    records = done_once(outdir, names)
    shard1 = [r for r in records if r["shard"] == "1/2"]
    assert len(shard1) == 6 and len({r["pid"] for r in shard1}) == 2  # some before, the rest after
    accounting = sacct(cluster, task)
    assert re.search(r"\bREQUEUED\b", accounting) and re.search(r"\bCOMPLETED\b", accounting), accounting


def seconds_per_photo(cluster, tmp_path: Path) -> float:
    """This machine's time for one photo of the SLOWER kind, one thread (as in a job)."""
    photos(tmp_path / "photos", 3)
    env = {**cluster.env(), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lama_refine.app.cli",
            f"indir={tmp_path / 'photos'}",
            f"outdir={tmp_path / 'out'}",
            "progress=false",
            *SLOWER,
        ],
        env=env,
        check=True,
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
    )
    return float(np.median([r["seconds"]["total"] for r in read_manifest(tmp_path / "out" / MANIFEST)]))


@pytest.mark.slow
def test_a_shard_out_of_time_is_requeued_by_the_launchers_checkpoint_and_finishes(cluster, tmp_path):
    """timeout_min=1: SLURM signals the job (signal_delay_s before the limit, on its 30 s ticks),
    submitit's handler asks the launcher for a checkpoint and requeues the job, which resumes."""
    # Enough photos that the first minute cannot finish them on any machine (the signal comes at
    # most 45 s in), few enough to stay quick.
    n = int(np.clip(np.ceil(60 / seconds_per_photo(cluster, tmp_path / "calibrate")), 12, 150))
    names = photos(tmp_path / "photos", n)
    outdir = tmp_path / "out"
    proc = sweep(cluster, tmp_path, 1, *SLOWER, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=15")
    task = running_task(cluster, 0)
    # The requeued job gets a longer limit, so that the test's time stays bounded on a slow machine.
    release(cluster, task, "TimeLimit=10")
    output = finish(proc, 900)
    assert proc.returncode == 0, output
    records = done_once(outdir, names)
    assert len({r["pid"] for r in records}) == 2 and len(records) == n
    log = "".join(p.read_text() for p in (tmp_path / "out").glob(f".lama-refine/multirun/*/.submitit/{task}/*_log.*"))
    assert "this job is timed-out" in log and f"Requeued job {task} (2 remaining timeouts)" in log, log
    accounting = sacct(cluster, task)
    assert re.search(r"\bREQUEUED\b", accounting) and re.search(r"\bCOMPLETED\b", accounting), accounting


@pytest.mark.slow
def test_a_cancelled_shard_ends_the_sweep_non_zero_naming_it_without_hanging(cluster, tmp_path):
    names = photos(tmp_path / "photos", 12)
    outdir = tmp_path / "out"
    proc = sweep(cluster, tmp_path, 2, *SLOWER)
    task = running_task(cluster, 1)
    wait_for(lambda: first_done(outdir, "1/2"), 180, "shard 1/2's first output")
    cluster.run("scancel", task)
    cancelled = time.monotonic()
    output = finish(proc, 240)
    assert time.monotonic() - cancelled < 240
    assert proc.returncode == 1, output
    assert re.search(
        rf"1 of 2 SLURM jobs ended without a result:\n  shard=1/2 \(SLURM job {task}\): CANCELLED", output
    ), output
    assert "Traceback" not in output
    records = read_manifest(outdir / MANIFEST)
    # the other shard was waited for and finished; the cancelled one kept what it had done
    assert sorted(r["output"] for r in records if r["shard"] == "0/2") == names[0::2]
    assert all(r["status"] == "done" for r in records) and len(records) < 12


@pytest.mark.slow
def test_a_bad_photo_fails_that_file_only(cluster, tmp_path):
    names = photos(tmp_path / "photos", 4)
    (tmp_path / "photos" / "broken_mask.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "photos" / "broken.png")
    proc = sweep(cluster, tmp_path, 2)
    output = finish(proc)
    assert proc.returncode != 0 and "1 file(s) failed in this job" in output, output
    outdir = tmp_path / "out"
    records = read_manifest(outdir / MANIFEST)
    assert sorted(r["output"] for r in records if r["status"] == "done") == names
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 1 and "broken_mask.png" in failed[0]["error"]
    summaries = [p.read_text() for p in (outdir / ".lama-refine" / "multirun").glob("*/[0-9]*/lama-refine.log")]
    assert sorted(re.search(r"(\d+ done, 0 skipped \(output exists\), \d failed)", s).group(1) for s in summaries) == [
        "2 done, 0 skipped (output exists), 0 failed",  # p000, p002
        "2 done, 0 skipped (output exists), 1 failed",
    ]  # broken, p001, p003


@pytest.mark.slow
def test_without_accounting_nothing_is_submitted_and_the_sweep_says_why(cluster, tmp_path):
    """A job that dies without a result stays UNKNOWN to submitit where sacct does not answer,
    and the sweep would wait forever: refused before submitting."""
    conf = tmp_path / "slurm.conf"
    conf.write_text(cluster.conf.read_text().replace("accounting_storage/slurmdbd", "accounting_storage/none"))
    photos(tmp_path / "photos", 2)
    proc = sweep(cluster, tmp_path, 2, env={"SLURM_CONF": str(conf)})
    output = finish(proc, 120)
    assert proc.returncode == 1, output
    assert "sacct does not answer (Slurm accounting storage is disabled)" in output and "Traceback" not in output
    assert not jobs(cluster) and not list((tmp_path / "out").glob(".lama-refine/multirun/*/.submitit"))


HAS_CLAIMS = any("claim" in name.lower() for name in dir(batch))


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CLAIMS, reason="needs claims (issue 21)")
def test_a_requeued_shard_racing_its_first_attempt_does_each_job_once(cluster, tmp_path):
    """Two attempts of one shard running at once (a requeue while the first attempt still runs,
    e.g. on a node SLURM lost contact with): each job is claimed and done by one of them."""
    names = photos(tmp_path / "photos", 12)
    first = sweep(cluster, tmp_path, 1, *SLOWER)
    second = sweep(cluster, tmp_path, 1, *SLOWER)
    wait_for(lambda: sum(s == "RUNNING" for s, _ in jobs(cluster).values()) == 2, 120, "both attempts to run")
    outputs = finish(first), finish(second)
    assert first.returncode == 0 and second.returncode == 0, outputs
    done_once(tmp_path / "out", names)


# --- the launcher's words, without a cluster ---------------------------------------------------


class LostJob:
    job_id, state = "7_1", "CANCELLED by 0"

    class paths:
        stderr = Path("/out/.submitit/7_1/7_1_0_log.err")

    def results(self):
        from submitit.core.utils import UncompletedJobError

        raise UncompletedJobError("Job 7_1 (task: 0) has not produced any output (state: CANCELLED by 0)")


class FinishedJob:
    job_id, state = "7_0", "COMPLETED"

    def results(self):
        return ["result of 7_0"]


def test_collect_waits_for_every_job_then_names_each_shard_without_a_result():
    pytest.importorskip("submitit")
    assert collect([FinishedJob()], [["shard=0/2"]]) == ["result of 7_0"]
    with pytest.raises(ShardsFailed) as e:
        collect([LostJob(), FinishedJob()], [["indir=x", "shard=1/2"], ["shard=0/2"]])
    assert str(e.value).splitlines()[:2] == [
        "1 of 2 SLURM jobs ended without a result:",
        "  shard=1/2 (SLURM job 7_1): CANCELLED by 0, no result; its log: /out/.submitit/7_1/7_1_0_log.err",
    ]
    assert shard_name(["refine=false"]) == "refine=false"
