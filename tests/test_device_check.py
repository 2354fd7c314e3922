"""benchmarks/device_check.py, the one-shot GPU check, runs end to end on the CPU (--dry-run)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_dry_run_writes_every_section(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "benchmarks-cuda.json").read_text())
    sections = report["sections"]
    assert all("error" not in s for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    assert report["failed_checks"] == [] and report["machine"]["dry_run"] is True
    correctness = sections["correctness"]["result"]
    assert len(correctness["golden"]) == 3 and all(c["ok"] for c in correctness["golden"].values())
    assert correctness["two_stage_split"]["devices"] == "[cpu,cpu]"
    speed = sections["speed"]["result"]["configs"]
    assert speed["faithful"]["max_abs_diff_vs_faithful"] == 0.0 and speed["lean (default)"]["s_per_iter"] > 0
    assert "skipped" in speed["bf16+compile"]
    assert len(sections["memory"]["result"]["runs"]) == 6
    assert sections["px_budget_auto"]["result"]["px_budget"] > 0
    oom = sections["oom_retry"]["result"]
    assert oom["simulated"] and oom["attempts"] == 2 and oom["retries"]
    markdown = (tmp_path / "benchmarks-cuda.md").read_text()
    assert "## Correctness" in markdown and "## Out-of-memory retry" in markdown
    assert (
        not (REPO / "docs" / "benchmarks-cuda.json").exists()
        or 'dry_run": false' in (REPO / "docs" / "benchmarks-cuda.json").read_text()
    )  # a dry run never replaces the GPU's numbers


def test_device_check_without_a_gpu_says_so_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "--dry-run" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())
