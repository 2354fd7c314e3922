"""Export to a LaMa experiment folder: what LaMa's code reads, and back into our loader unchanged."""

from pathlib import Path

import pytest
import torch
from conftest import FIXTURES
from omegaconf import OmegaConf

from lama_refine.errors import UserError
from lama_refine.models import build_generator, load_generator
from lama_refine.models.convert import main
from lama_refine.models.lama.export import export_lama_experiment
from lama_refine.train.loop import export_generator

PLAIN_LAMA = {
    "ffc_resnet": FIXTURES / "golden" / "three_scales" / "generator.safetensors",
    "pix2pixhd_global": FIXTURES / "golden-pix2pixhd" / "odd_nonsquare_refine_fails" / "generator.safetensors",
}


@pytest.mark.parametrize("kind", sorted(PLAIN_LAMA))
def test_export_round_trip_gives_identical_tensors_and_outputs(kind, tmp_path):
    source = load_generator(PLAIN_LAMA[kind])
    out = export_lama_experiment(PLAIN_LAMA[kind], tmp_path / "exp")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["config.yaml", "models", "models/best.ckpt"]

    loaded = load_generator(out)
    assert loaded.format == "lama-experiment" and loaded.config == source.config
    want, got = source.generator.state_dict(), loaded.generator.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    x = torch.rand(1, 4, 64, 72, generator=torch.Generator().manual_seed(0))
    x[:, 3] = (x[:, 3] > 0.7).float()
    assert torch.equal(source.generator(x), loaded.generator(x))


def test_export_writes_a_lightning_checkpoint_of_plain_data_and_lamas_config_sections(tmp_path):
    out = export_lama_experiment(PLAIN_LAMA["ffc_resnet"], tmp_path / "exp")
    ckpt_path = out / "models" / "best.ckpt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt_path)) == []
    ckpt = torch.load(ckpt_path, weights_only=True)  # LaMa's plain torch.load reads it as it is
    assert all(k.startswith("generator.") for k in ckpt["state_dict"])
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["state_dict"].values())

    config = OmegaConf.load(out / "config.yaml")
    # What make_training_model and bin/predict.py read before building the generator.
    assert config.training_model.kind == "default" and config.training_model.concat_mask is True
    assert config.trainer.kwargs.accelerator is None and "kind" in config.visualizer
    golden = OmegaConf.load(FIXTURES / "golden" / "three_scales" / "generator.yaml")
    assert OmegaConf.to_container(config.generator) == OmegaConf.to_container(golden.generator, resolve=True)
    assert OmegaConf.to_container(OmegaConf.create(ckpt["hyper_parameters"])) == OmegaConf.to_container(config)


@pytest.fixture
def input_fill_model(tmp_path) -> Path:
    cfg = {
        "kind": "ffc_resnet",
        "input_nc": 4,
        "output_nc": 3,
        "ngf": 8,
        "n_downsampling": 2,
        "n_blocks": 1,
        "add_out_act": "sigmoid",
        "input_fill": "diffusion",
        "init_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False},
        "downsample_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False},
        "resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": False},
    }
    weights, _ = export_generator(build_generator(cfg).eval(), cfg, tmp_path / "fill")
    return weights


def test_a_generator_with_an_option_lama_lacks_is_refused_before_anything_is_written(input_fill_model, tmp_path):
    with pytest.raises(UserError, match=r"input_fill: diffusion.*model\.input_fill=null"):
        export_lama_experiment(input_fill_model, tmp_path / "exp")
    assert not (tmp_path / "exp").exists()


def test_convert_cli_to_lama_experiment(input_fill_model, tmp_path, capsys):
    assert main([str(PLAIN_LAMA["ffc_resnet"]), str(tmp_path / "exp"), "--to", "lama-experiment"]) == 0
    assert "best.ckpt" in capsys.readouterr().out
    assert load_generator(tmp_path / "exp").format == "lama-experiment"

    with pytest.raises(SystemExit) as info:
        main([str(input_fill_model), str(tmp_path / "refused"), "--to", "lama-experiment"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input_fill" in err and "Traceback" not in err
    assert not (tmp_path / "refused").exists()


def test_the_built_in_demo_model_exports_by_name_and_demo_fill_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "exp", "--to", "lama-experiment"]) == 0
    exported = load_generator(tmp_path / "exp")
    assert exported.format == "lama-experiment" and "input_fill" not in exported.config
    with pytest.raises(SystemExit):
        main(["demo-fill", "refused", "--to", "lama-experiment"])
    assert "input_fill" in capsys.readouterr().err and not (tmp_path / "refused").exists()
