"""Each `perf.*` switch runs; the numerically neutral ones keep outputs within 1e-5."""

import pytest
import torch
from conftest import GOLDEN, Case

from lama_refine.config import build_inpainter, compose
from lama_refine.perf import allocator
from lama_refine.perf.lean import ConvSpec
from lama_refine.perf.switches import Checkpointed, PerfConfig, RearStage, step_hook

CASE = Case(GOLDEN / "odd_nonsquare_2scales")


def built_overrides(*overrides, case=CASE) -> list[str]:
    return [
        f"model.path={case.path / 'generator.safetensors'}",
        "indir=x",
        "outdir=y",
        "progress=false",
        "output.match_input_size=false",
        *case.overrides(),
        *overrides,
    ]


def inpaint(*overrides, case=CASE):
    inpainter = build_inpainter(compose(built_overrides(*overrides, case=case)))
    return inpainter, inpainter.run(case.image(), case.mask())


@pytest.fixture(scope="module")
def faithful():
    threads = torch.get_num_threads()
    _, result = inpaint("perf.lean_backward=false")
    torch.set_num_threads(threads)
    return result


@pytest.mark.slow  # seconds: full suite only
def test_faithful_baseline_is_the_originals_output(faithful):
    expected = torch.from_numpy(CASE.npy("refined")).permute(2, 0, 1)[None]
    assert (faithful.image - expected).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # the default: lean backward
        ["perf.channels_last=true"],
        ["perf.checkpointing=true"],
        ["perf.checkpointing=true", "perf.lean_backward=false"],
        ["perf.channels_last=true", "perf.checkpointing=true"],
        ["perf.tile_rows=8"],
        ["perf.tile_rows=8", "perf.lean_backward=false"],
    ],
)
@pytest.mark.slow  # seconds: full suite only
def test_neutral_switches_keep_outputs_and_losses_within_1e5(faithful, overrides):
    _, result = inpaint(*overrides)
    assert (result.image - faithful.image).abs().max() <= 1e-5
    for ours, theirs in zip(result.losses, faithful.losses, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5)


def test_threads_switch_sets_torch_threads_at_the_entry_point(faithful):
    from lama_refine.app.api import make_inpainter

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        built, _ = inpaint("perf.threads=1")
        assert torch.get_num_threads() == 2  # building a pipeline leaves the process alone
        inpainter = make_inpainter(built_overrides("perf.threads=1"))  # an entry point applies it
        assert torch.get_num_threads() == 1
        result = inpainter.run(CASE.image(), CASE.mask())
        assert (result.image - faithful.image).abs().max() <= 1e-5
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_runs_close_to_float32_and_keeps_known_pixels(faithful, amp):
    inpainter, result = inpaint(f"perf.amp={amp}")
    assert inpainter.partition.rear[-1].module.amp_dtype in (torch.bfloat16, torch.float16)
    assert result.image.dtype == torch.float32 and torch.isfinite(result.image).all()
    known = CASE.mask().expand_as(result.image) == 0
    assert torch.equal(result.image[known], faithful.image[known])
    diff = (result.image - faithful.image).abs()
    assert 0 < diff.max() <= 0.1 and diff.mean() <= 5e-3  # it does run in half precision, and close


def test_amp_without_the_lean_backward_is_a_clear_error():
    with pytest.raises(ValueError, match="lean_backward"):
        PerfConfig(amp="bf16", lean_backward=False)
    with pytest.raises(ValueError, match="perf.amp"):
        PerfConfig(amp="int8")


@pytest.mark.slow  # seconds: full suite only
def test_switches_shape_the_rear_stages():
    inpainter, _ = inpaint("perf.checkpointing=true", "perf.channels_last=true")
    stage = inpainter.partition.rear[-1].module
    assert isinstance(stage, RearStage) and stage.channels_last and stage.float_output
    assert sum(isinstance(m, Checkpointed) for m in stage) == 3  # the case's 3 resnet blocks
    conv = next(m for m in stage.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow  # torch.compile
def test_compile_switch_runs_and_keeps_outputs(faithful):
    pytest.importorskip("torch._inductor")
    # Smallest refinement that still optimises: one iteration step at the finest scale.
    _, compiled = inpaint("perf.compile=true", "refiner.n_iters=2")
    _, eager = inpaint("refiner.n_iters=2")
    assert (compiled.image - eager.image).abs().max() <= 1e-5


def test_the_perf_object_is_built_once_and_applied_in_one_pass(monkeypatch):
    """One PerfConfig per pipeline, whatever reads it (the px_budget=auto memory model, the
    pipeline), and the rear tuned by one tune_partition call."""
    import lama_refine.config as config
    import lama_refine.pipeline as pipeline

    built, tuned = [], []
    real_from_config, real_tune = PerfConfig.from_config.__func__, pipeline.tune_partition
    monkeypatch.setattr(
        PerfConfig, "from_config", classmethod(lambda cls, c: built.append(1) or real_from_config(cls, c))
    )
    monkeypatch.setattr(pipeline, "tune_partition", lambda split, perf: tuned.append(perf) or real_tune(split, perf))
    case = Case(GOLDEN / "three_scales")
    inpainter = build_inpainter(
        compose(
            [
                f"model.path={case.path / 'generator.safetensors'}",
                "pyramid.px_budget=auto",
                "perf.tile_rows=16",
                *case.overrides(),
            ]
        )
    )
    assert len(built) == 1
    inpainter(case.image(), case.mask())
    inpainter(case.image(), case.mask())
    assert len(built) == 1 and len(tuned) == 1 and tuned[0] is inpainter.perf
    assert config.perf_config(compose(["perf.tile_rows=16"])) == inpainter.perf


@pytest.mark.skipif(not allocator.on_glibc_malloc(), reason="glibc's malloc does not serve this process")
def test_malloc_trim_runs_once_per_optimiser_step_and_keeps_the_output_bit_identical(monkeypatch):
    real, calls = allocator.malloc_trim, []
    monkeypatch.setattr(allocator, "malloc_trim", lambda: calls.append(1) or real())
    _, plain = inpaint("refiner.n_iters=3", "perf.malloc_trim=false")
    assert calls == []
    _, trimmed = inpaint("refiner.n_iters=3")  # on by default
    assert torch.equal(plain.image, trimmed.image) and plain.losses == trimmed.losses
    steps = sum(len(losses) - 1 for losses in trimmed.losses if losses)  # n_iters forwards, n_iters - 1 steps
    assert steps > 0 and len(calls) == steps


def test_malloc_trim_is_a_no_op_off_glibcs_malloc(monkeypatch):
    monkeypatch.setattr(allocator, "is_loaded", lambda name, maps=None: name == "tcmalloc")
    assert step_hook(PerfConfig(malloc_trim=True)) is None
    monkeypatch.setattr(allocator, "libc", lambda: None)  # no glibc at all
    monkeypatch.setattr(allocator, "is_loaded", lambda name, maps=None: False)
    assert step_hook(PerfConfig(malloc_trim=True)) is None and not allocator.malloc_trim()


def _upsampling_band_rows(inpainter) -> set:
    return {
        m.spec.band_rows
        for stage in inpainter.partition.rear
        for m in stage.module.modules()
        if isinstance(getattr(m, "spec", None), ConvSpec) and m.spec.transposed
    }


def test_tile_rows_bands_the_upsampling_convs_and_keeps_the_goldens(faithful):
    inpainter, result = inpaint("perf.tile_rows=8")
    assert _upsampling_band_rows(inpainter) == {8}
    assert (result.image - faithful.image).abs().max() <= 1e-5
    inpainter, _ = inpaint("perf.tile_rows=8", "perf.tile_tail=false")
    assert _upsampling_band_rows(inpainter) == {None}
