"""Each part's contract, checked when the pipeline is built: what it receives, what it must be,
the pixel budget the out-of-memory retry changes, and where `gpu_ids` is read."""

import inspect
import logging

import pytest
import torch
from test_config import OPTIONS, REQUIRED
from torch import nn

from lama_refine.batch.runner import halved_px_budget
from lama_refine.config import PART_CONTRACTS, build_parts, check_part, compose, declared, read_config
from lama_refine.errors import UserError
from lama_refine.models import trunk_bounds
from lama_refine.parts.pyramid import FullResolutionPyramid, Level, OriginalPyramid, PyramidBuilder
from lama_refine.parts.refine import PlainRefiner, Refiner
from lama_refine.pipeline import Inpainter

SHARED = {"downsampler", "mask_downsampler", "loss_mask_downsampler"}  # what build_parts may inject


class NeedsAThing(Refiner):
    """A refiner with a required argument nobody gives."""

    def __init__(self, thing, **knobs):
        self.thing = thing

    def refine(self, partition, levels):
        raise AssertionError("never run")


class BudgetedPyramid(PyramidBuilder):
    """A user's pyramid that keeps its budget under its own name and honours the contract."""

    def __init__(self, limit: int):
        self.limit = limit

    def build(self, image, mask):
        return [Level(image, mask)]

    def pixel_budget(self):
        return self.limit

    def with_pixel_budget(self, px_budget):
        return BudgetedPyramid(px_budget)


class UnbudgetedPyramid(BudgetedPyramid):
    def pixel_budget(self):
        return None


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.parametrize("group,option", [o for o in OPTIONS if o[0] in PART_CONTRACTS])
def test_every_built_in_option_keeps_its_contract_and_declares_what_it_receives(group, option):
    parts = build_parts(compose(["indir=x", "outdir=y", f"{group}={option}", *REQUIRED.get((group, option), [])]))
    part = {
        "pyramid_mask": lambda: parts["pyramid"].mask_downsampler,
        "loss_mask": lambda: parts["refiner"].loss_mask_downsampler,
    }.get(group, lambda: parts[group])()
    check_part(group, part)
    injected = set(declared(type(part), {name: object() for name in SHARED}))
    expected = {
        "pyramid": {"downsampler", "mask_downsampler"},
        "refiner": {"downsampler", "loss_mask_downsampler"} if option != "plain" else set(),
    }
    assert injected == expected.get(group, set())  # a part gets what it declares, nothing else
    assert injected <= set(inspect.signature(type(part)).parameters)
    if group == "pyramid":
        assert part.pixel_budget() == part.px_budget  # the retry's contract, not an attribute probe


def test_the_plain_refiner_takes_no_downsamplers_it_would_ignore():
    assert not SHARED & set(inspect.signature(PlainRefiner).parameters)
    assert isinstance(build_parts(compose(["indir=x", "outdir=y", "refiner=plain"]))["refiner"], PlainRefiner)


def test_a_part_that_is_not_its_base_fails_at_build_naming_its_class_and_the_method():
    with pytest.raises(
        UserError,
        match=r"refiner: collections\.OrderedDict is not a Refiner; subclass "
        r"lama_refine\.parts\.refine\.Refiner and implement `refine`",
    ):
        build_parts(compose(["indir=x", "outdir=y", "refiner._target_=collections.OrderedDict"]))


def test_a_part_missing_a_required_argument_fails_at_build_naming_it():
    with pytest.raises(UserError, match=r"refiner: test_contracts\.NeedsAThing needs thing.*refiner\.thing="):
        build_parts(compose(["indir=x", "outdir=y", "refiner._target_=test_contracts.NeedsAThing"]))


def test_a_target_that_does_not_import_is_one_message():
    with pytest.raises(UserError, match="cannot import `_target_` no_such_module.Part"):
        build_parts(compose(["indir=x", "outdir=y", "pyramid._target_=no_such_module.Part"]))


def _inpainter(pyramid) -> Inpainter:
    return Inpainter(generator=nn.Conv2d(4, 3, 1), pyramid=pyramid, refiner=PlainRefiner(), partitioner=None)


def test_the_out_of_memory_retry_halves_any_pyramid_that_keeps_the_budget_contract():
    inpainter = _inpainter(BudgetedPyramid(1000))
    with halved_px_budget(inpainter) as change:
        assert change == "px_budget 1000 -> 500" and inpainter.pyramid.pixel_budget() == 500
    assert inpainter.pyramid.pixel_budget() == 1000


@pytest.mark.parametrize("pyramid", [UnbudgetedPyramid(1000), FullResolutionPyramid(None, None)])
def test_a_pyramid_without_a_budget_gets_no_retry_and_the_log_says_so(pyramid, caplog):
    with caplog.at_level(logging.WARNING, logger="lama_refine"), halved_px_budget(_inpainter(pyramid)) as change:
        assert change is None
    assert f"pyramid {type(pyramid).__name__} has no pixel budget" in caplog.text


def test_halving_the_budget_leaves_the_configured_pyramid_alone():
    pyramid = OriginalPyramid(None, None, px_budget=800)
    assert pyramid.with_pixel_budget(400).pixel_budget() == 400 and pyramid.pixel_budget() == 800


def test_gpu_ids_are_resolved_once_into_devices():
    cfg = compose(["indir=x", "outdir=y", "refiner.gpu_ids='0, 2'"])  # composing reads the config
    assert list(cfg.devices) == ["cuda:0", "cuda:2"] and "gpu_ids" not in cfg.refiner
    assert read_config(cfg) == cfg
    unset = compose(["indir=x", "outdir=y", "devices=[cpu]"])
    assert list(unset.devices) == ["cpu"] and "gpu_ids" not in unset.refiner
    assert "gpu_ids" not in vars(build_parts(compose(["indir=x", "outdir=y", "refiner.gpu_ids='1'"]))["refiner"])


def test_gpu_ids_naming_no_gpu_is_a_user_error():
    with pytest.raises(UserError, match=r"refiner.gpu_ids='x' names no GPU"):
        compose(["indir=x", "outdir=y", "refiner.gpu_ids=x"])


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


def test_a_generator_of_an_unregistered_kind_is_a_clear_error_naming_the_class_and_how_to_register():
    generator = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), Block(), nn.Conv2d(8, 3, 1))
    with pytest.raises(
        UserError,
        match=r"unregistered kind: class Sequential has no trunk block.*Block.*"
        r"register_block\(YourBlock\)",
    ):
        trunk_bounds(generator)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = generator

    with pytest.raises(
        UserError,
        match=r"unregistered kind: class Wrapped is neither an nn.Sequential.*"
        r"register_generator\(YourNet, layers='attribute'",
    ):
        trunk_bounds(Wrapped())


def test_a_generator_registered_by_its_trunk_indices_is_split_there():
    from lama_refine.models import register_generator
    from lama_refine.parts.partition import EvenPartitioner

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), Block(), Block(), nn.Conv2d(8, 3, 1))

        def forward(self, x):
            return self.body(x)

    register_generator(Net, layers="body", trunk=(1, 3))
    net = Net().eval().requires_grad_(False)
    assert trunk_bounds(net) == (1, 2)
    partition = EvenPartitioner().split(net, [torch.device("cpu")] * 2)
    assert partition.rear_indices == [[1], [2, 3]]
    x = torch.rand(1, 4, 8, 8)
    assert torch.equal(partition.run_rear(partition.front(x)), net(x))


def test_a_subclass_forwarding_kwargs_declares_what_its_base_declares():
    from lama_refine.parts.refine import L1Refiner

    class Forwarding(L1Refiner):
        def __init__(self, *args, extra: int = 1, **kwargs):
            super().__init__(*args, **kwargs)

    assert set(declared(Forwarding, {name: object() for name in SHARED})) == {"downsampler", "loss_mask_downsampler"}
