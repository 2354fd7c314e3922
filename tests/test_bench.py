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
