"""Less work per image: early stopping per scale (`refiner.stop`) and warm start (`refiner.warm_start`)."""

import math

import pytest
import torch
from conftest import GOLDEN, Case
from hypothesis import given, settings
from hypothesis import strategies as st

from lama_refine.app.cli import run
from lama_refine.batch.runner import MANIFEST, read_manifest
from lama_refine.config import build_parts, compose
from lama_refine.parts.downsample import AllPixelsMaskDownsampler, BlurMaskDownsampler, GaussianDownsampler
from lama_refine.parts.partition import EvenPartitioner
from lama_refine.parts.pyramid import OriginalPyramid
from lama_refine.parts.refine import EarlyStop, L1Refiner, upsample_residual


def first_stop(policy: EarlyStop, losses: list[float]) -> int | None:
    """Forwards run before the refiner's loop stops (None: it runs them all)."""
    for n in range(1, len(losses) + 1):
        if policy.should_stop(losses[:n]):
            return n
    return None


def reference_stop(losses: list[float], tol: float, patience: int) -> int | None:
    """The rule written out plainly: stop after forward n when each of the last `patience` losses
    failed to beat (1 - tol) times the best loss before it."""
    for n in range(patience + 1, len(losses) + 1):
        if all(not losses[k] < (1 - tol) * min(losses[:k]) for k in range(n - patience, n)):
            return n
    return None


@pytest.mark.parametrize(
    "losses,tol,patience,expected",
    [
        ([1.0, 0.5, 0.25, 0.125, 0.0625], 0.01, 1, None),  # halves every time: never stops
        ([1.0, 1.0, 1.0, 1.0, 1.0], None, 2, 3),  # flat: the 2nd and 3rd forward stall
        ([1.0, 0.9, 0.895, 0.893, 0.5], 0.01, 2, 4),  # < 1 % twice in a row, before the late drop
        ([1.0, 0.9, 0.895, 0.85, 0.849, 0.848], 0.01, 2, 6),  # a stall, an improvement, then two stalls
        ([1.0, 1.2, 0.99, 1.3, 1.1], 0.0, 2, 5),  # worse than the best counts as a stall
        ([1.0, math.nan, math.nan], None, 2, 3),  # a NaN never improves
    ],
)
def test_early_stop_stops_where_it_should(losses, tol, patience, expected):
    assert first_stop(EarlyStop(tol=tol, patience=patience), losses) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-3, max_value=10.0), min_size=1, max_size=20),
    st.sampled_from([0.0, 1e-3, 0.01, 0.1]),
    st.integers(min_value=1, max_value=5),
)
def test_early_stop_matches_the_rule_on_any_loss_sequence(losses, tol, patience):
    policy = EarlyStop(tol=tol, patience=patience)
    assert first_stop(policy, losses) == reference_stop(losses, tol, patience)


def test_early_stop_is_off_by_default_and_rejects_half_settings():
    assert not EarlyStop().enabled and not EarlyStop().should_stop([1.0] * 50)
    with pytest.raises(ValueError, match="needs refiner.stop.patience"):
        EarlyStop(tol=0.01)
    with pytest.raises(ValueError, match="patience must be >= 1"):
        EarlyStop(tol=0.01, patience=0)
    with pytest.raises(ValueError, match="tol must be in"):
        EarlyStop(tol=1.5, patience=2)


def test_config_defaults_leave_both_switches_off():
    refiner = build_parts(compose(["indir=x", "outdir=y"]))["refiner"]
    assert refiner.stop == EarlyStop() and not refiner.stop.enabled and refiner.warm_start is False
    refiner = build_parts(
        compose(["indir=x", "outdir=y", "refiner.stop.tol=0.01", "refiner.stop.patience=2", "refiner.warm_start=true"])
    )["refiner"]
    assert refiner.stop == EarlyStop(tol=0.01, patience=2) and refiner.warm_start is True


@pytest.fixture(scope="module")
def three():
    """The three-scale golden case, its pyramid and a CPU partition."""
    case = Case(GOLDEN / "three_scales")
    p = case.params
    levels = OriginalPyramid(
        GaussianDownsampler(), BlurMaskDownsampler(), p["min_side"], p["max_scales"], p["px_budget"]
    ).build(case.image(), case.mask())
    assert len(levels) == 3
    return case, levels, EvenPartitioner().split(case.generator(), [torch.device("cpu")])


def l1(**kwargs):
    return L1Refiner(GaussianDownsampler(), AllPixelsMaskDownsampler(), **{"n_iters": 5, **kwargs})


def test_a_patience_longer_than_the_scale_changes_nothing(three):
    _, levels, partition = three
    base = l1().refine(partition, levels)
    patient = l1(stop=EarlyStop(tol=0.0, patience=10)).refine(partition, levels)
    assert torch.equal(base.image, patient.image) and base.losses == patient.losses


def test_early_stop_ends_each_scale_and_keeps_that_forward(three):
    _, levels, partition = three
    # No 90 % improvement in one iteration: every refined scale stops after its second forward.
    stopped = l1(stop=EarlyStop(tol=0.9, patience=1)).refine(partition, levels)
    assert [len(s) for s in stopped.losses] == [0, 2, 2]
    two = l1(n_iters=2).refine(partition, levels)  # the same two forwards, run to the end
    assert torch.equal(stopped.image, two.image) and stopped.losses == two.losses


def test_manifest_records_the_iterations_per_scale(tmp_path):
    case = Case(GOLDEN / "three_scales")
    indir, outdir = tmp_path / "in", tmp_path / "out"
    indir.mkdir()
    (indir / "img.png").write_bytes((case.path / "image.png").read_bytes())
    (indir / "img_mask.png").write_bytes((case.path / "mask.png").read_bytes())
    overrides = [
        f"model.path={case.path / 'generator.safetensors'}",
        f"indir={indir}",
        f"outdir={outdir}",
        "progress=false",
        *case.overrides(),
    ]
    run(compose(overrides + ["refiner.stop.tol=0.9", "refiner.stop.patience=1"]))
    run(compose(overrides + [f"outdir={tmp_path / 'full'}"]))
    assert [r["iterations"] for r in read_manifest(outdir / MANIFEST)] == [[0, 2, 2]]
    n = case.params["n_iters"]
    assert [r["iterations"] for r in read_manifest(tmp_path / "full" / MANIFEST)] == [[0, n, n]]


def test_upsample_residual_lines_cells_up_from_the_corner():
    coarse = torch.arange(12.0).reshape(1, 1, 3, 4)
    up = upsample_residual(coarse, (24, 32), (48, 64), torch.Size((1, 1, 6, 8)))
    assert up.shape == (1, 1, 6, 8)
    assert torch.allclose(up, torch.nn.functional.interpolate(coarse, scale_factor=2, mode="bilinear"))
    # The finer scale pads more: its extra cells repeat the border; a constant stays constant.
    padded = upsample_residual(torch.full((1, 2, 3, 4), 0.5), (24, 30), (49, 61), torch.Size((1, 2, 7, 8)))
    assert padded.shape == (1, 2, 7, 8) and torch.allclose(padded, torch.full_like(padded, 0.5))


def test_warm_start_is_a_no_op_on_two_scales():
    case = Case(GOLDEN / "odd_nonsquare_2scales")
    levels = OriginalPyramid(GaussianDownsampler(), BlurMaskDownsampler(), min_side=96).build(case.image(), case.mask())
    assert len(levels) == 2  # the coarsest scale is a plain forward: nothing optimised to carry over
    partition = EvenPartitioner().split(case.generator(), [torch.device("cpu")])
    assert torch.equal(l1(warm_start=True).refine(partition, levels).image, l1().refine(partition, levels).image)


def test_warm_start_changes_the_third_scale_and_keeps_known_pixels(three):
    _, levels, partition = three
    base, warm = l1().refine(partition, levels), l1(warm_start=True).refine(partition, levels)
    assert torch.equal(base.scales[1], warm.scales[1])  # scales 0 and 1 are as before
    assert base.losses[1] == warm.losses[1]
    assert not torch.equal(base.image, warm.image)  # the third starts elsewhere ...
    assert base.losses[2][0] != warm.losses[2][0]
    known = levels[-1].mask < 0.5
    assert torch.equal(
        warm.image.expand(1, 3, -1, -1)[known.expand(1, 3, -1, -1)], levels[-1].image[known.expand(1, 3, -1, -1)]
    )  # ... and keeps the known pixels
    assert all(math.isfinite(v) for v in warm.losses[2])
