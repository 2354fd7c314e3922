"""benchmarks/bench.py's glue to the memory model."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_perf_overrides_parse():
    perf = _bench().perf_from_overrides(["perf.amp=bf16", "perf.threads=1", "perf.checkpointing=true", "refine=false"])
    assert (perf.amp, perf.threads, perf.checkpointing, perf.lean_backward) == ("bf16", 1, True, True)


@pytest.mark.slow  # seconds: full suite only
def test_predicted_peak_grows_with_the_size_and_shrinks_with_the_lean_backward():
    bench = _bench()
    tiny, large = (bench.predicted_peak(bench.Spec(size=size, config="lean")) for size in ("tiny", "1mp"))
    faithful = bench.predicted_peak(bench.Spec(size="1mp", config="faithful"))
    assert 0 < tiny < large < faithful


def test_the_anchor_plans_resolve():
    """Every spec of the anchor plans names a known config and size; its perf overrides build a
    PerfConfig; the original comes first, then the faithful run on the system allocator."""
    bench = _bench()
    for plan in ("anchor", "anchor-smoke"):
        specs = bench.PLANS[plan]
        assert [s.config for s in specs] == list(bench.ANCHOR_CONFIGS)
        assert {s.size for s in specs} == {"1mp" if plan == "anchor" else "tiny"}
        for s in specs:
            bench.perf_from_overrides(bench.CONFIGS[s.config] + s.extra)
    glibc = {name for name, overrides in bench.CONFIGS.items() if "perf.allocator=glibc" in overrides}
    assert {"faithful", "original", "glibc", "glibc+trim", "lean", "glibc+mmap4096"} <= glibc
    assert bench.perf_from_overrides(bench.CONFIGS["defaults"]).allocator == "auto"
    assert bench.perf_from_overrides(bench.CONFIGS["glibc+trim"]).malloc_trim
    assert bench.perf_from_overrides(bench.CONFIGS["glibc+mmap256"]).mmap_threshold_kb == 256


@pytest.mark.parametrize("installed", [True, False])
def test_a_childs_environment_preloads_what_auto_resolves_to(installed, monkeypatch, tmp_path):
    from lama_refine.perf import allocator

    bench = _bench()
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    monkeypatch.setattr(allocator, "find_library", lambda name: lib if installed and name == "tcmalloc" else None)
    inherited = {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2:/x/libother.so", "PATH": "/bin"}
    env = bench.child_env(bench.Spec("tiny", "defaults"), inherited)
    if installed:
        assert env["LD_PRELOAD"] == f"{lib}:/x/libother.so" and env[allocator.REEXEC_MARK] == "1"
    else:
        assert env["LD_PRELOAD"] == "/x/libother.so"  # the system allocator: no allocator inherited either
    for config in ("glibc", "faithful", "original"):
        assert bench.child_env(bench.Spec("tiny", config), inherited)["LD_PRELOAD"] == "/x/libother.so"
    assert "PYTHONPATH" not in bench.child_env(bench.Spec("tiny", "original"), inherited)  # LaMa's venv, as is
