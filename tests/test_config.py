"""Every config in conf/ instantiates; device spellings resolve as LaMa users expect."""

import re

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lama_refine.config import (
    build_parts,
    compose,
    conf_dir,
    parse_devices,
    parse_gpu_ids,
    read_config,
    resolve_devices,
)
from lama_refine.errors import UserError
from lama_refine.parts.downsample import Downsampler, MaskDownsampler
from lama_refine.parts.partition import DevicePartitioner
from lama_refine.parts.pyramid import PyramidBuilder
from lama_refine.parts.refine import Refiner

PART_GROUPS = {
    "downsampler": Downsampler,
    "mask_downsampler": MaskDownsampler,
    "pyramid_mask": MaskDownsampler,
    "loss_mask": MaskDownsampler,
    "pyramid": PyramidBuilder,
    "refiner": Refiner,
    "partitioner": DevicePartitioner,
}
# Options with a mandatory value (`???`), and the value a user would give.
REQUIRED = {("partitioner", "explicit"): ["partitioner.blocks=[2,1]"]}
OPTIONS = [(group, path.stem) for group in PART_GROUPS for path in sorted((conf_dir() / group).glob("*.yaml"))]


def test_every_group_of_conf_is_known_here():
    groups = {p.name for p in conf_dir().iterdir() if p.is_dir()}
    assert groups - {"train", "hydra"} <= set(PART_GROUPS), "a new config group needs a line in PART_GROUPS"


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_config_instantiates_to_its_part(group, option):
    if group == "mask_downsampler":  # the shared options behind pyramid_mask/ and loss_mask/
        part = instantiate(OmegaConf.load(conf_dir() / group / f"{option}.yaml"))
    else:
        parts = build_parts(compose(["indir=x", "outdir=y", f"{group}={option}", *REQUIRED.get((group, option), [])]))
        part = {
            "pyramid_mask": lambda: parts["pyramid"].mask_downsampler,
            "loss_mask": lambda: parts["refiner"].loss_mask_downsampler,
        }.get(group, lambda: parts[group])()
    assert isinstance(part, PART_GROUPS[group])


def test_the_two_mask_downsamplers_are_separate_choices():
    parts = build_parts(compose(["indir=x", "outdir=y", "pyramid_mask=nearest", "loss_mask=blur"]))
    assert type(parts["pyramid"].mask_downsampler).__name__ == "NearestMaskDownsampler"
    assert type(parts["refiner"].loss_mask_downsampler).__name__ == "BlurMaskDownsampler"


def test_defaults_are_the_original_parameters():
    cfg = compose(["indir=x", "outdir=y"])
    assert (
        cfg.refiner.n_iters,
        cfg.refiner.lr,
        cfg.pyramid.min_side,
        cfg.pyramid.max_scales,
        cfg.pyramid.px_budget,
        cfg.modulo,
    ) == (15, 0.002, 512, 3, 1_800_000, 8)
    parts = build_parts(cfg)
    assert parts["refiner"].modulo == 8


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("0,1, 2", ["cuda:0", "cuda:1", "cuda:2"]),
        ("0,", ["cuda:0"]),
        ("1", ["cuda:1"]),
        (" 3 , x, 4", ["cuda:3", "cuda:4"]),
    ],
)
def test_gpu_ids_are_parsed_like_lama(spec, expected):
    assert [str(d) for d in parse_gpu_ids(spec)] == expected


def test_gpu_ids_naming_nothing_is_an_error():
    with pytest.raises(ValueError, match="names no GPU"):
        parse_gpu_ids(",x")


def test_devices_default_to_cpu_without_gpus_and_missing_gpus_are_errors():
    if torch.cuda.is_available():
        pytest.skip("machine has a GPU")
    assert resolve_devices(None) == [torch.device("cpu")]
    assert resolve_devices(["cpu", "cpu"]) == [torch.device("cpu")] * 2
    with pytest.raises(ValueError, match="not available"):
        resolve_devices(None, gpu_ids="0,1")
    with pytest.raises(ValueError, match="not available"):
        resolve_devices(["cuda:0"])


def test_mandatory_explicit_block_counts_are_reported_by_name():
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue, match="blocks"):
        build_parts(compose(["indir=x", "outdir=y", "partitioner=explicit"]))


@pytest.mark.parametrize("option,expected", [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_the_refiners_optimizer_is_one_override(option, expected):
    refiner = build_parts(compose(["indir=x", "outdir=y", f"refiner/optimizer={option}", "refiner.lr=0.1"]))["refiner"]
    optimizer = refiner.make_optimizer([torch.zeros(3, requires_grad=True)])
    assert type(optimizer) is expected and optimizer.defaults["lr"] == 0.1


def test_readme_lists_every_option_with_its_override():
    readme = (conf_dir().parent / "README.md").read_text() if (conf_dir().parent / "README.md").is_file() else None
    if readme is None:
        pytest.skip("installed package: no README beside conf/")
    rows = {
        line.split("|")[2].strip(" `"): line
        for line in readme.splitlines()
        if line.startswith("| ") and line.count("|") == 5
    }  # the swap-point table: part | override | options | default
    groups = [g for g in PART_GROUPS if g != "mask_downsampler"] + ["refiner/optimizer"]
    for group in groups:
        row = rows[f"{group}="]
        for path in (conf_dir() / group).glob("*.yaml"):
            assert f"`{path.stem}`" in row, f"README's swap-point table misses {group}={path.stem}"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("cpu", ["cpu"]),
        (["cpu"], ["cpu"]),
        ("[cpu]", ["cpu"]),
        ("CPU", ["cpu"]),
        ("cuda", ["cuda:0"]),
        ("gpu", ["cuda:0"]),
        ("gpu:1", ["cuda:1"]),
        ("cuda:1", ["cuda:1"]),
        ("cuda:0,cuda:1", ["cuda:0", "cuda:1"]),
        (["gpu", "cuda:2"], ["cuda:0", "cuda:2"]),
        (0, ["cuda:0"]),
        ([0, 1], ["cuda:0", "cuda:1"]),
        ("mps", ["mps"]),
        (None, None),
        ("", None),
    ],
)
def test_every_device_spelling_parses_to_one_name_each(value, expected):
    assert parse_devices(value) == expected


@pytest.mark.parametrize(
    "value, says",
    [
        ("tpu", "devices=tpu: 'tpu' is not a device"),
        ([], "names no device"),
        (["cpu", "c"], "devices=[cpu,c]: 'c' is not a device"),
        ({"a": 1}, "expected a device or a list"),
    ],
)
def test_a_device_that_does_not_parse_is_one_user_error(value, says):
    with pytest.raises(UserError, match=re.escape(says)) as error:
        parse_devices(value)
    assert "devices=cpu" in str(error.value) and "\n" not in str(error.value)


def test_devices_are_read_once_where_the_config_is_read():
    cfg = compose(["indir=x", "outdir=y", "devices=cpu"])
    assert list(cfg.devices) == ["cpu"] and "gpu_ids" not in cfg.refiner
    raw = compose(["indir=x", "outdir=y", "devices=gpu"], raw=True)
    assert raw.devices == "gpu" and "gpu_ids" in raw.refiner  # the yaml as written, for the key checks
    assert list(read_config(raw).devices) == ["cuda:0"]
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="devices=gpu: cuda:0 is not available"):
            read_config(raw, check=True)
