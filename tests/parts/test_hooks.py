"""The refiner's callbacks arrive as one `RefineHooks` object per `refine()` call, and building a
pipeline changes neither the refiner it is given nor the process."""

import dataclasses
import warnings

import pytest
import torch
from conftest import GOLDEN, Case

from lama_refine.parts.downsample import AllPixelsMaskDownsampler, BlurMaskDownsampler, GaussianDownsampler
from lama_refine.parts.partition import EvenPartitioner
from lama_refine.parts.pyramid import FixedPyramid
from lama_refine.parts.refine import L1Refiner, PlainRefiner, RefineHooks, Refiner, run_refiner
from lama_refine.perf import allocator
from lama_refine.perf.switches import PerfConfig
from lama_refine.pipeline import Inpainter

CASE = Case(GOLDEN / "odd_nonsquare_2scales")


def l1(n_iters: int = 3) -> L1Refiner:
    return L1Refiner(GaussianDownsampler(), AllPixelsMaskDownsampler(), n_iters=n_iters)


def pipeline(refiner: Refiner, hooks: RefineHooks = RefineHooks(), **perf) -> Inpainter:
    pyramid = FixedPyramid(GaussianDownsampler(), BlurMaskDownsampler(), n_scales=2)
    return Inpainter(
        CASE.generator(),
        pyramid,
        refiner,
        EvenPartitioner(),
        hooks=hooks,
        perf=PerfConfig(malloc_trim=False, **perf),
        match_input_size=False,
    )


@pytest.fixture(scope="module")
def levels_and_partition():
    levels = FixedPyramid(GaussianDownsampler(), BlurMaskDownsampler(), n_scales=2).build(CASE.image(), CASE.mask())
    return levels, EvenPartitioner().split(CASE.generator(), [torch.device("cpu")])


def test_hooks_hear_every_forward_and_every_step(levels_and_partition):
    levels, partition = levels_and_partition
    reports, steps = [], []
    hooks = RefineHooks(progress=lambda *args: reports.append(args[:4]), after_step=lambda: steps.append(1))
    result = l1(n_iters=3).refine(partition, levels, hooks)
    # the coarsest scale is one forward (0 of 1), the finer one n_iters forwards and n_iters - 1 steps
    assert reports == [(0, 2, 0, 1), (1, 2, 0, 3), (1, 2, 1, 3), (1, 2, 2, 3)]
    assert len(steps) == 2
    silent = l1(n_iters=3).refine(partition, levels)  # no hooks: the same numbers
    assert torch.equal(silent.image, result.image) and silent.losses == result.losses
    reports.clear()
    PlainRefiner().refine(partition, levels, hooks)
    assert reports == [(0, 1, 0, 1)]


def test_the_pipeline_passes_its_hooks_and_leaves_the_refiner_as_given():
    refiner = l1(n_iters=2)
    before = dict(vars(refiner))
    reports = []
    inpainter = pipeline(refiner, RefineHooks(progress=lambda *args: reports.append(args[:2])))
    assert vars(refiner) == before  # building rewires nothing
    inpainter.run(CASE.image(), CASE.mask())
    assert reports and {n for _, n in reports} == {2}
    assert not hasattr(refiner, "progress") and not hasattr(refiner, "after_step")
    assert inpainter.refiner is refiner


def test_building_a_pipeline_leaves_the_process_settings_alone():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    pipeline(l1(), threads=other)
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not allocator.on_glibc_malloc(), reason="glibc's malloc does not serve this process")
def test_perfs_step_hook_runs_after_the_callers_own(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "malloc_trim", lambda: calls.append("trim"))
    inpainter = dataclasses.replace(
        pipeline(l1(n_iters=3)),
        perf=PerfConfig(malloc_trim=True),
        hooks=RefineHooks(after_step=lambda: calls.append("mine")),
    )
    inpainter.run(CASE.image(), CASE.mask())
    assert calls == ["mine", "trim"] * 2


class OldStyleRefiner(Refiner):
    """A refiner written against lama-refine 0.1: no `hooks` parameter, reads its attributes."""

    def __init__(self):
        self.plain = PlainRefiner()

    def refine(self, partition, levels):
        self.progress(0, 1, 0, 1, None)
        return self.plain.refine(partition, levels)


def test_a_refiner_without_the_hooks_parameter_still_runs_with_a_deprecation_warning():
    reports = []
    inpainter = pipeline(OldStyleRefiner(), RefineHooks(progress=lambda *args: reports.append(args)))
    with pytest.warns(DeprecationWarning, match="no `hooks` parameter"):
        old = inpainter.run(CASE.image(), CASE.mask())
    new = pipeline(PlainRefiner()).run(CASE.image(), CASE.mask())
    assert torch.equal(old.image, new.image) and reports == [(0, 1, 0, 1, None)]


def test_a_refiner_that_forwards_hooks_gets_no_warning(levels_and_partition):
    levels, partition = levels_and_partition

    class Delegating(Refiner):
        def refine(self, partition, levels, hooks=RefineHooks()):
            return PlainRefiner().refine(partition, levels, hooks)

    reports = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_refiner(Delegating(), partition, levels, RefineHooks(progress=lambda *a: reports.append(a)))
    assert len(reports) == 1


def test_hooks_are_frozen_and_a_new_field_is_optional():
    hooks = RefineHooks()
    with pytest.raises(dataclasses.FrozenInstanceError):
        hooks.progress = print  # type: ignore[misc]
    assert all(f.default is None for f in dataclasses.fields(RefineHooks))
