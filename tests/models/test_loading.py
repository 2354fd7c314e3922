"""Checkpoint loading (all formats, safely) and conversion to safetensors."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import subprocess
import sys
import types
import typing
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from lama_refine.models import (
    BIG_LAMA,
    CheckpointError,
    CheckpointMismatchError,
    LoadedGenerator,
    build_generator,
    generator_config,
    load_generator,
)
from lama_refine.models.convert import convert, main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CASES = sorted(p for p in (FIXTURES / "golden").iterdir() if p.is_dir()) + sorted(
    p for p in (FIXTURES / "golden-pix2pixhd").iterdir() if p.is_dir()
)
FORMAT_PATHS = {  # how each format is addressed inside a golden case folder
    "lama-experiment": "checkpoint",
    "lightning": "checkpoint/models/best.ckpt",
    "torchscript": "generator.torchscript.pt",
    "safetensors": "generator.safetensors",
}
FFC_CASE = FIXTURES / "golden" / "three_scales"


def available_formats(case: Path) -> dict[str, Path]:
    return {fmt: case / rel for fmt, rel in FORMAT_PATHS.items() if (case / rel).exists()}


def assert_same_state(a: nn.Module | dict, b: nn.Module | dict) -> None:
    """Same keys, same dtypes, bit-equal values (safetensors files list keys sorted)."""
    sa = a.state_dict() if isinstance(a, nn.Module) else a
    sb = b.state_dict() if isinstance(b, nn.Module) else b
    assert sorted(sa) == sorted(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def golden_state(case: Path) -> dict[str, torch.Tensor]:
    return load_file(case / "generator.safetensors")


def golden_config(case: Path) -> dict:
    return generator_config(OmegaConf.load(case / "generator.yaml"))


# --------------------------------------------------------------------------- golden formats


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_every_format_gives_the_same_generator(case: Path) -> None:
    formats = available_formats(case)
    assert {"lama-experiment", "lightning", "safetensors"} <= set(formats)
    reference = golden_state(case)
    x = torch.rand(1, 4, 64, 96, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for fmt, path in formats.items():
        loaded = load_generator(path)
        assert isinstance(loaded, LoadedGenerator)
        assert loaded.format == fmt
        assert loaded.source == path
        assert loaded.config == golden_config(case)
        assert not loaded.generator.training
        assert not any(p.requires_grad for p in loaded.generator.parameters())
        assert_same_state(loaded.generator, reference)
        with torch.no_grad():
            outputs[fmt] = loaded.generator(x)
    eager = outputs["safetensors"]
    for fmt, out in outputs.items():
        assert torch.equal(out, eager), fmt
    if "torchscript" in formats:  # the export itself computes what our eager generator computes
        with torch.no_grad():
            traced = torch.jit.load(str(formats["torchscript"]))(x)
        torch.testing.assert_close(traced, eager, rtol=0, atol=1e-6)


def test_ckpt_outside_experiment_uses_hyper_parameters(tmp_path: Path) -> None:
    ckpt = tmp_path / "some.ckpt"
    shutil.copy(FFC_CASE / "checkpoint" / "models" / "best.ckpt", ckpt)
    loaded = load_generator(ckpt)
    assert loaded.config == golden_config(FFC_CASE)  # not big-lama: read from the DictConfig
    assert_same_state(loaded.generator, golden_state(FFC_CASE))


def test_experiment_folder_with_other_checkpoint_name(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    shutil.copytree(FFC_CASE / "checkpoint", exp)
    (exp / "models" / "best.ckpt").rename(exp / "models" / "last.ckpt")
    assert_same_state(load_generator(exp, checkpoint="last.ckpt").generator, golden_state(FFC_CASE))
    with pytest.raises(FileNotFoundError, match="best.ckpt"):
        load_generator(exp)


def test_safetensors_config_from_metadata_then_big_lama(tmp_path: Path) -> None:
    state = golden_state(FFC_CASE)
    with_meta = tmp_path / "with_meta.safetensors"
    save_file(state, str(with_meta), metadata={"lama_refine.generator": json.dumps(golden_config(FFC_CASE))})
    assert load_generator(with_meta).config == golden_config(FFC_CASE)
    bare = tmp_path / "bare.safetensors"
    save_file(state, str(bare))
    with pytest.raises(CheckpointMismatchError, match="big-lama default"):
        load_generator(bare)


def test_safetensors_yaml_may_be_a_whole_lama_config(tmp_path: Path) -> None:
    # A full config.yaml (with `${env:TORCH_HOME}` elsewhere) next to the weights.
    shutil.copy(FFC_CASE / "generator.safetensors", tmp_path / "w.safetensors")
    shutil.copy(FFC_CASE / "checkpoint" / "config.yaml", tmp_path / "w.yaml")
    assert "${env:TORCH_HOME}" in (tmp_path / "w.yaml").read_text()
    assert load_generator(tmp_path / "w.safetensors").config == golden_config(FFC_CASE)


def test_prefixed_and_half_precision_state_dicts(tmp_path: Path) -> None:
    state = golden_state(FFC_CASE)
    shutil.copy(FFC_CASE / "generator.yaml", tmp_path / "g.yaml")
    prefixed = {f"model.generator.{k}": v for k, v in state.items()}
    prefixed["model.discriminator.x"] = torch.zeros(3)
    torch.save(prefixed, tmp_path / "g.pth")
    loaded = load_generator(tmp_path / "g.pth")
    assert loaded.format == "state-dict"
    assert_same_state(loaded.generator, state)

    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(half, str(tmp_path / "g.safetensors"))
    loaded = load_generator(tmp_path / "g.safetensors")
    expected = {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}
    assert_same_state(loaded.generator, expected)
    assert loaded.generator.state_dict()["model.1.bn_l.num_batches_tracked"].dtype == torch.int64


# --------------------------------------------------------------------------- safety


def test_fixture_checkpoints_need_the_stub_path() -> None:
    for case in CASES:
        with pytest.raises(pickle.UnpicklingError):
            torch.load(case / "checkpoint" / "models" / "best.ckpt", weights_only=True)


def test_dictconfig_is_never_unpickled(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("omegaconf code ran while loading a checkpoint")

    monkeypatch.setattr(DictConfig, "__setstate__", refuse)  # plain unpickling would call it
    load_generator(FFC_CASE / "checkpoint" / "models" / "best.ckpt")


class RunsCode:
    """Pickles as a call to `func(*args)`: what a hostile checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class WritesOnSetstate:
    """Has a side effect in `__setstate__` (would run under plain unpickling)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __setstate__(self, state):
        Path(state["marker"]).write_text("ran")


def lightning_dict(state: dict, **extra) -> dict:
    return {"epoch": 3, "state_dict": {f"generator.{k}": v for k, v in state.items()}, **extra}


@pytest.mark.parametrize("payload", ["os.system", "subprocess", "exec"])
def test_hostile_top_level_object_raises_without_side_effect(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    call = {
        "os.system": RunsCode(os.system, f"touch {marker}"),
        "subprocess": RunsCode(subprocess.call, ["touch", str(marker)]),
        "exec": RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
    }[payload]
    path = tmp_path / "evil.ckpt"
    torch.save(call, path)
    with pytest.raises(CheckpointError, match="evil.ckpt") as info:
        load_generator(path)
    assert not marker.exists()
    assert "weights_only" not in str(info.value)  # never advise the unsafe retry


def test_hostile_objects_inside_a_valid_checkpoint_stay_inert(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "exp" / "models" / "best.ckpt"
    path.parent.mkdir(parents=True)
    shutil.copy(FFC_CASE / "checkpoint" / "config.yaml", path.parent.parent / "config.yaml")
    torch.save(
        lightning_dict(
            golden_state(FFC_CASE),
            callbacks={
                "a": RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
                "b": WritesOnSetstate(marker),
                "c": RunsCode(subprocess.call, ["touch", str(marker)]),
            },
        ),
        path,
    )
    torch.load(path, weights_only=False)  # the payload is real: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    loaded = load_generator(path.parent.parent)
    assert not marker.exists()
    assert_same_state(loaded.generator, golden_state(FFC_CASE))


# Classes that stand for Lightning / callback classes; their module is registered only while
# the checkpoint is written, so loading can only succeed if nothing tries to import it.
_FAKE_MODULE = "fake_lightning_for_lama_refine_tests"


def _fake_lightning_module() -> types.ModuleType:
    module = types.ModuleType(_FAKE_MODULE)

    class AttributeDict(dict):
        pass

    class ModelCheckpoint:
        pass

    for cls in (AttributeDict, ModelCheckpoint):
        cls.__module__, cls.__qualname__ = _FAKE_MODULE, cls.__name__
        setattr(module, cls.__name__, cls)
    return module


def test_foreign_classes_in_checkpoint_are_tolerated(tmp_path: Path) -> None:
    module = _fake_lightning_module()
    generator_section = OmegaConf.to_container(OmegaConf.load(FFC_CASE / "generator.yaml"))["generator"]
    hparams = module.AttributeDict(generator=generator_section, location={"path": "${env:TORCH_HOME}"})
    hparams.note = "attribute on a dict subclass"
    checkpoint = lightning_dict(
        golden_state(FFC_CASE),
        hyper_parameters=hparams,
        callbacks={module.ModelCheckpoint: {"best_model_score": np.float64(0.25), "monitor": typing.Any}},
        loops=defaultdict(list, {"fit": [1, 2]}),
        numbers=[np.int64(3), np.arange(3)],
    )
    path = tmp_path / "foreign.ckpt"
    sys.modules[_FAKE_MODULE] = module
    try:
        torch.save(checkpoint, path)
    finally:
        del sys.modules[_FAKE_MODULE]
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert f"{_FAKE_MODULE}.AttributeDict" in unsafe and "collections.defaultdict" in unsafe

    loaded = load_generator(path)
    assert _FAKE_MODULE not in sys.modules
    assert loaded.config == golden_config(FFC_CASE)
    assert_same_state(loaded.generator, golden_state(FFC_CASE))


# --------------------------------------------------------------------------- big-lama shapes


def randomised_big_lama() -> nn.Module:
    torch.manual_seed(0)
    generator = build_generator(BIG_LAMA).eval()
    with torch.no_grad():
        for name, buffer in generator.named_buffers():
            if name.endswith("num_batches_tracked"):
                buffer.fill_(int(torch.randint(1, 10_000, ())))
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
            else:
                buffer.normal_(0, 0.1)
    return generator


class _Wrapper(nn.Module):
    """Like the widely used `big-lama.pt`: the generator under a `generator.` prefix."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_big_lama_in_three_formats(tmp_path: Path) -> None:
    generator = randomised_big_lama()
    state = generator.state_dict()

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "big-lama.safetensors"))
    hparams = OmegaConf.create({"generator": dict(BIG_LAMA), "location": {"weights": "${env:TORCH_HOME}"}})
    torch.save(
        lightning_dict(
            state,
            hyper_parameters=hparams,
            optimizer_states=[{"state": {}, "param_groups": [{"lr": 1e-3}]}],
            **{"pytorch-lightning_version": "1.2.9"},
        )
        | {
            "state_dict": {
                **{f"generator.{k}": v for k, v in state.items()},
                "discriminator.conv.weight": torch.rand(2, 2),
            }
        },
        tmp_path / "best.ckpt",
    )
    with torch.no_grad():
        traced = torch.jit.trace(_Wrapper(generator), torch.rand(1, 4, 64, 64), check_trace=False)
    traced.save(str(tmp_path / "big-lama.pt"))
    del traced

    for name, fmt in [
        ("big-lama.safetensors", "safetensors"),
        ("best.ckpt", "lightning"),
        ("big-lama.pt", "torchscript"),
    ]:
        loaded = load_generator(tmp_path / name)
        assert loaded.format == fmt
        assert loaded.config == generator_config(BIG_LAMA)
        assert_same_state(loaded.generator, state)
        del loaded


# --------------------------------------------------------------------------- errors


def _mismatch(path: Path) -> str:
    with pytest.raises(CheckpointMismatchError) as info:
        load_generator(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_wrong_architecture_yaml(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    shutil.copytree(FFC_CASE / "checkpoint", exp)
    config = (exp / "config.yaml").read_text()
    assert "  ngf: 8\n" in config
    (exp / "config.yaml").write_text(config.replace("  ngf: 8\n", "  ngf: 16\n"))
    message = _mismatch(exp / "models" / "best.ckpt")
    assert "config.yaml" in message
    assert "mis-shaped keys" in message
    assert "model.1.ffc.convl2l.weight (checkpoint [8, 4, 7, 7] vs model [16, 4, 7, 7])" in message


def test_wrong_generator_kind(tmp_path: Path) -> None:
    shutil.copy(FFC_CASE / "generator.safetensors", tmp_path / "g.safetensors")
    pix2pix = FIXTURES / "golden-pix2pixhd" / "odd_nonsquare_refine_fails" / "generator.yaml"
    shutil.copy(pix2pix, tmp_path / "g.yaml")
    message = _mismatch(tmp_path / "g.safetensors")
    assert "missing keys" in message and "model.1.weight" in message
    assert "unexpected keys" in message and "model.1.bn_l.num_batches_tracked" in message
    assert "more)" in message  # lists are cut at 5


def test_renamed_key(tmp_path: Path) -> None:
    state = golden_state(FFC_CASE)
    state["model.1.ffc.convl2l.weight_renamed"] = state.pop("model.1.ffc.convl2l.weight")
    save_file(state, str(tmp_path / "g.safetensors"))
    shutil.copy(FFC_CASE / "generator.yaml", tmp_path / "g.yaml")
    message = _mismatch(tmp_path / "g.safetensors")
    assert "missing keys (1): model.1.ffc.convl2l.weight" in message
    assert "unexpected keys (1): model.1.ffc.convl2l.weight_renamed" in message


def test_wrongly_shaped_tensor(tmp_path: Path) -> None:
    state = golden_state(FFC_CASE)
    state["model.2.bn_l.running_mean"] = torch.zeros(17)
    torch.save({"state_dict": {f"generator.{k}": v for k, v in state.items()}}, tmp_path / "g.ckpt")
    shutil.copy(FFC_CASE / "generator.yaml", tmp_path / "g.yaml")
    message = _mismatch(tmp_path / "g.ckpt")
    assert "model.2.bn_l.running_mean (checkpoint [17] vs model [16])" in message


@pytest.mark.parametrize("source", ["checkpoint/models/best.ckpt", "generator.safetensors", "generator.torchscript.pt"])
def test_truncated_file(tmp_path: Path, source: str) -> None:
    data = (FFC_CASE / source).read_bytes()
    path = tmp_path / Path(source).name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=path.name) as info:
        load_generator(path)
    assert not isinstance(info.value, CheckpointMismatchError)


@pytest.mark.parametrize(
    "name, content",
    [("notes.ckpt", b"just some text\n"), ("empty.pt", b""), ("random.safetensors", bytes(range(256)) * 4)],
)
def test_not_a_checkpoint(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=name):
        load_generator(path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        load_generator(tmp_path / "nowhere.ckpt")


# --------------------------------------------------------------------------- convert


@pytest.mark.parametrize("fmt", list(FORMAT_PATHS))
def test_convert_round_trip(tmp_path: Path, fmt: str) -> None:
    source = available_formats(FFC_CASE)[fmt]
    original = load_generator(source)
    dst = convert(source, tmp_path / "out" / "model.safetensors")
    assert dst == tmp_path / "out" / "model.safetensors"
    assert sorted(p.name for p in dst.parent.iterdir()) == ["model.safetensors", "model.yaml"]

    converted = load_generator(dst)
    assert converted.config == original.config
    assert_same_state(converted.generator, original.generator)
    assert_same_state(load_file(dst), original.generator)  # original key names, no prefix

    from_yaml = build_generator(OmegaConf.load(dst.with_suffix(".yaml")))
    assert [(k, v.shape) for k, v in from_yaml.state_dict().items()] == [
        (k, v.shape) for k, v in original.generator.state_dict().items()
    ]
    with safe_open(str(dst), framework="pt") as file:
        assert json.loads(file.metadata()["lama_refine.generator"]) == original.config


def test_convert_writes_files_with_the_usual_mode_not_0600(tmp_path: Path) -> None:
    """lama-refine-convert writes through io.write_atomic: 0o666 less the umask, as a plainly
    created file (its own writer used to leave mkstemp's 0o600)."""
    previous = os.umask(0o022)
    try:
        dst = convert(
            FIXTURES / "golden-pix2pixhd" / "odd_nonsquare_refine_fails" / "checkpoint", tmp_path / "p.safetensors"
        )
    finally:
        os.umask(previous)
    assert oct(dst.stat().st_mode & 0o777) == oct(0o644)
    assert oct(dst.with_suffix(".yaml").stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors", "p.yaml"]  # no temporaries left


def test_convert_pix2pixhd_and_metadata_alone_is_enough(tmp_path: Path) -> None:
    case = FIXTURES / "golden-pix2pixhd" / "odd_nonsquare_refine_fails"
    dst = convert(case / "checkpoint", tmp_path / "p.safetensors")
    dst.with_suffix(".yaml").unlink()
    loaded = load_generator(dst)
    assert loaded.config["kind"] == "pix2pixhd_global"
    assert_same_state(loaded.generator, golden_state(case))


def test_convert_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    exp = tmp_path / "exp"
    shutil.copytree(FFC_CASE / "checkpoint", exp)
    (exp / "models" / "best.ckpt").rename(exp / "models" / "epoch3.ckpt")
    assert main([str(exp), str(tmp_path / "m.safetensors"), "--checkpoint", "epoch3.ckpt"]) == 0
    assert "m.safetensors" in capsys.readouterr().out
    assert_same_state(load_generator(tmp_path / "m.safetensors").generator, golden_state(FFC_CASE))

    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "bad.ckpt"), str(tmp_path / "x.safetensors")])
    assert info.value.code == 1
    assert "bad.ckpt" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
