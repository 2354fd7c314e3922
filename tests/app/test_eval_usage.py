"""lama-refine-eval meets a user's mistakes as lama-refine does (usage.check_eval_command_line):
one message, the usage, exit status 2, no traceback, nothing written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GOLDEN

from lama_refine.app import evaluate
from lama_refine.app.usage import quote_value

REPO = Path(__file__).resolve().parents[2]


def run_entry(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["lama-refine-eval", *argv])
    with pytest.raises(SystemExit) as end:
        evaluate.entry()
    return end.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, says",
    [
        ((), "gt_dir and outdir are required: gt_dir=DIR"),
        (("gt_dir=nope", "outdir=out"), "gt_dir=nope: no such folder"),
        (
            ("gt_dir=gt", "outdir=out", "refiner.n_iter=3"),
            "refiner.n_iter=3: unknown key refiner.n_iter; did you mean refiner.n_iters?",
        ),
        (("gt_dir=gt", "outdir=out", "refiner.n_iters=abc"), "refiner.n_iters=abc: expected a whole number"),
        (("gt_dir=gt", "outdir=out", "pyramid=fixd"), "pyramid has no option 'fixd'; did you mean pyramid=fixed?"),
        (("gt_dir=gt", "outdir=out", "masks.family=huge"), "masks.family=huge: use one of medium, thick, thin"),
        (("gt_dir=gt", "outdir=out", "lpips=squeeze"), "lpips=squeeze: use one of alex, vgg"),
        (("gt_dir=gt", "outdir=out", "mask_dir=none"), "mask_dir=none: no such folder"),
        (("gt_dir=gt", "outdir=out", "model.path=missing.ckpt"), "model.path=missing.ckpt: no such file or folder"),
        (("gt_dir=gt", "outdir=out", "baseline=refine=False"), "baseline=refine=False: names the setting a --multirun"),
        (("gt_dir=gt", "outdir=out", "trace=gt/f/t"), "trace=gt/f/t: "),
    ],
)
def test_each_mistake_is_one_message_and_status_2(args, says, tmp_path, monkeypatch, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "f").write_bytes(b"")  # a file where `trace=` wants a folder
    monkeypatch.chdir(tmp_path)
    code, err = run_entry(monkeypatch, capsys, *args)
    assert code == 2
    first, *usage = err.strip().splitlines()
    assert first.startswith("lama-refine-eval: ") and says in first, err
    assert usage[0].startswith("usage: lama-refine-eval") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt"]  # nothing written


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ("baseline=pyramid_mask=blur",),
            "baseline=pyramid_mask=blur: pyramid_mask is not a key this sweep varies (refine)",
        ),
        (("baseline=2",), "baseline=2: this sweep has jobs 0-1"),
    ],
)
def test_a_baseline_outside_the_sweep_is_one_message(args, says, tmp_path, monkeypatch, capsys):
    (tmp_path / "gt").mkdir()
    monkeypatch.chdir(tmp_path)
    code, err = run_entry(monkeypatch, capsys, "--multirun", "gt_dir=gt", "outdir=out", "refine=false,true", *args)
    assert code == 2 and says in err.splitlines()[0], err


def test_the_checks_accept_a_good_sweep_with_a_baseline(tmp_path, monkeypatch):
    from lama_refine.app.usage import check_eval_command_line

    (tmp_path / "gt").mkdir()
    monkeypatch.chdir(tmp_path)
    overrides = quote_value(["gt_dir=gt", "outdir=out", "refine=false,true", "baseline=refine=False"], "baseline")
    assert overrides[-1] == "baseline='refine=False'"
    cfg = check_eval_command_line(overrides, multirun=True)
    assert cfg.baseline == "refine=False" and (tmp_path / "out").is_dir()
    assert quote_value(["baseline=2", "baseline='a=b'"], "baseline") == ["baseline=2", "baseline='a=b'"]


@pytest.mark.slow  # subprocesses
def test_help_and_mistakes_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def app(*args):
        return subprocess.run(
            [sys.executable, "-m", "lama_refine.app.evaluate", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    helped = app("--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "lama-refine-eval" in helped.stdout and "pyramid_mask=" in helped.stdout  # the parts list resolves
    for args, says in [
        ((), "gt_dir and outdir are required"),
        (("gt_dir=.", "outdir=o", "refiner.n_iter=3"), "did you mean refiner.n_iters?"),
    ]:
        proc = app(*args)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_golden_model_passes_the_model_check(tmp_path, monkeypatch):
    from lama_refine.app.usage import check_eval_command_line

    (tmp_path / "gt").mkdir()
    monkeypatch.chdir(tmp_path)
    model = GOLDEN / "three_scales" / "generator.safetensors"
    assert check_eval_command_line(["gt_dir=gt", "outdir=out", f"model.path={model}", "lpips=null"]).lpips is None
