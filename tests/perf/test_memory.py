"""The memory model (meta-device traces) and pyramid.px_budget=auto."""

import pytest
import torch
from conftest import GOLDEN, Case

from lama_refine.config import build_inpainter, compose
from lama_refine.models import BIG_LAMA, build_generator
from lama_refine.perf.memory import (
    FREE_FRACTION,
    auto_px_budget,
    estimate_peak,
    meta_copy,
    trace_rear,
)
from lama_refine.perf.switches import PerfConfig


@pytest.fixture(scope="module")
def big_lama():
    with torch.device("meta"):
        return build_generator(BIG_LAMA).eval().requires_grad_(False)


def test_meta_copy_copies_no_data_and_leaves_the_original_alone():
    generator = Case(GOLDEN / "three_scales").generator()
    copy = meta_copy(generator)
    assert all(p.device.type == "meta" for p in copy.parameters())
    assert all(p.device.type == "cpu" for p in generator.parameters())


def test_lean_backward_keeps_an_order_of_magnitude_less(big_lama):
    plain, _ = trace_rear(big_lama, (256, 384), PerfConfig(lean_backward=False))
    lean, largest = trace_rear(big_lama, (256, 384), PerfConfig())
    assert lean * 50 < plain
    assert largest == 64 * (256 + 6) * (384 + 6) * 4  # the last 64-channel activation, padded for the 7x7


@pytest.mark.slow  # seconds: full suite only
def test_estimate_grows_with_the_image_and_shrinks_with_the_switches(big_lama):
    small = estimate_peak(big_lama, (384, 512), PerfConfig(lean_backward=False)).total
    large = estimate_peak(big_lama, (768, 1024), PerfConfig(lean_backward=False)).total
    lean = estimate_peak(big_lama, (768, 1024), PerfConfig(mmap_threshold_kb=128)).total
    checkpointed = estimate_peak(big_lama, (768, 1024), PerfConfig(lean_backward=False, checkpointing=True)).total
    assert small < large and lean < checkpointed < large
    heap = estimate_peak(big_lama, (768, 1024), PerfConfig()).total  # glibc's adaptive threshold
    assert lean < heap < large


@pytest.mark.slow  # seconds: full suite only
def test_auto_budget_fits_the_free_memory(big_lama):
    free = 6 * 2**30
    budget = auto_px_budget(big_lama, PerfConfig(), "cpu", free_bytes=free)
    h = int((budget / (4 / 3)) ** 0.5)
    fits = estimate_peak(big_lama, (h, int(h * 4 / 3)), PerfConfig(), "cpu").total
    free_with_process = free + 400 * 2**20 + sum(p.numel() * 4 for p in big_lama.parameters())
    assert fits <= FREE_FRACTION * free_with_process * 1.01
    assert budget > auto_px_budget(big_lama, PerfConfig(lean_backward=False), "cpu", free_bytes=free)
    with pytest.raises(MemoryError):
        auto_px_budget(big_lama, PerfConfig(lean_backward=False), "cpu", free_bytes=-(2**30))


def test_px_budget_auto_becomes_a_number_before_the_pyramid_is_built():
    case = Case(GOLDEN / "three_scales")
    cfg = compose(
        [f"model.path={case.path / 'generator.safetensors'}", "indir=x", "outdir=y", "pyramid.px_budget=auto"]
    )
    inpainter = build_inpainter(cfg)
    assert isinstance(inpainter.pyramid.px_budget, int) and inpainter.pyramid.px_budget >= 256 * 256


def test_the_balanced_split_estimate_lines_up_with_the_rear_and_agrees_with_the_trace(big_lama):
    """One estimator per question: partition.saved_activation_bytes (per rear module, what the
    balanced split weighs) run on the meta device adds up to the memory model's trace of the rear."""
    from lama_refine.parts.partition import saved_activation_bytes

    costs = saved_activation_bytes(big_lama, probe_size=128)
    assert len(costs) == 36 - 5  # rear = indices 5..35
    assert costs[17] > 0 and costs[18] == 0  # the last resnet block keeps tensors; the concat nothing
    traced, _ = trace_rear(big_lama, (128, 128), PerfConfig(lean_backward=False))
    assert abs(sum(costs) * 128 * 128 - traced) < 0.01 * traced  # the trace also counts BN's saved buffers
