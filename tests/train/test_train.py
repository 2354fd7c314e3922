"""The demo model's training recipe: masks, data, losses, and a smoke run of the documented command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lama_refine.train import data as datamod
from lama_refine.train.loop import ThreadTuner, lr_factor, plan_phases
from lama_refine.train.losses import (
    PatchDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    gradient_loss,
    masked_l1,
    psnr,
)
from lama_refine.train.mask_families import FAMILIES, draw_boxes, mixed_mask, random_mask, seeded_mask

ROOT = Path(__file__).resolve().parents[2]


# --- masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_seeded_mask_is_deterministic(family: str) -> None:
    a = seeded_mask(200, 300, family, 5)
    b = seeded_mask(200, 300, family, 5)
    c = seeded_mask(200, 300, family, 6)
    assert a.shape == (200, 300) and a.dtype == np.float32
    assert set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mask_coverage_is_plausible(family: str) -> None:
    coverage = np.array([seeded_mask(256, 256, family, seed).mean() for seed in range(30)])
    assert (coverage > 0).all() and (coverage <= 0.5).all()  # LaMa's max_tamper_area
    assert 0.03 < coverage.mean() < 0.45


def test_masks_scale_with_resolution() -> None:
    """Sizes are relative to a 512 px reference: coverage does not depend on the resolution."""
    for family in FAMILIES:
        small = np.mean([seeded_mask(256, 256, family, s).mean() for s in range(20)])
        large = np.mean([seeded_mask(1024, 1024, family, s).mean() for s in range(20)])
        assert abs(small - large) < 0.05, family


def looks_like_boxes(mask: np.ndarray) -> bool:
    """A union of a few axis-aligned boxes has few distinct rows; strokes (slanted, round caps) many."""
    rows = {r.tobytes() for r in mask.astype(np.uint8)}
    return len(rows) <= 12


def test_box_families_draw_boxes() -> None:
    """medium and thick are boxes about 0.3 / 1.3 of the time (LaMa's box_proba), thin never."""
    for family, expected in (("thin", 0.0), ("medium", 0.23), ("thick", 0.23)):
        share = np.mean([looks_like_boxes(seeded_mask(256, 256, family, s)) for s in range(60)])
        assert abs(share - expected) < 0.15, (family, share)


def test_boxes_respect_margin() -> None:
    params = FAMILIES["thick"].boxes
    mask = draw_boxes(512, 512, params, np.random.default_rng(0))
    margin = params.margin
    assert mask[:margin].sum() == 0 and mask[-margin:].sum() == 0
    assert mask[:, :margin].sum() == 0 and mask[:, -margin:].sum() == 0


def test_unknown_family_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown mask family"):
        random_mask(64, 64, "huge", np.random.default_rng(0))


def test_mixed_mask_uses_the_weights() -> None:
    rng = np.random.default_rng(0)
    mask = mixed_mask(128, 128, rng, {"thin": 1.0})
    assert 0 < mask.mean() <= 0.5


# --- data and losses -------------------------------------------------------------------------


def write_images(folder: Path, n: int = 3, size: tuple[int, int] = (80, 96)) -> Path:
    """Tiny smooth synthetic photos: gradients plus a few blobs (no download needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: size[0], : size[1]] / max(size)
    for i in range(n):
        channels = [
            np.sin(xx * rng.uniform(2, 9) + rng.uniform(0, 6)) * np.cos(yy * rng.uniform(2, 9)) for _ in range(3)
        ]
        image = ((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8)
        Image.fromarray(image).save(folder / f"img{i}.png")
    return folder


def test_folder_photos_and_crops(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "imgs")
    photos = datamod.load_photos(image_dir=folder, max_short_side=64)
    assert sorted(photos) == ["img0.png", "img1.png", "img2.png"]
    assert all(min(p.shape[:2]) == 64 for p in photos.values())
    sampler = datamod.CropSampler([datamod.to_tensor(p) for p in photos.values()], np.random.default_rng(0))
    images, masks = sampler.batch(4, 32)
    assert images.shape == (4, 3, 32, 32) and masks.shape == (4, 1, 32, 32)
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    val_x, val_m, families = datamod.validation_set(photos, size=32, per_photo=2, view_short_side=48)
    assert val_x.shape == (6, 3, 32, 32) and len(families) == 6


def test_holdout_is_disjoint_from_training_names() -> None:
    assert set(datamod.HOLDOUT) <= set(datamod.PHOTOS)
    assert len(set(datamod.PHOTOS) - set(datamod.HOLDOUT)) >= 20


def test_losses_behave() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:20, 8:20] = 1
    assert float(masked_l1(target, target, mask)) == 0
    assert float(gradient_loss(target, target, mask)) == 0
    noisy = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    assert float(masked_l1(noisy, target, mask)) > 0
    assert (psnr(noisy, target, mask) > 10).all()
    disc = PatchDiscriminator(ndf=8).requires_grad_(False)
    real_logits, real_feats = disc(target)
    fake_logits, fake_feats = disc(noisy)
    assert float(discriminator_loss(real_logits, fake_logits, mask)) > 0
    assert float(feature_matching_loss(fake_feats, real_feats, mask)) > 0


def test_schedule_and_phases() -> None:
    phases = plan_phases(
        10,
        [
            {"fraction": 0.75, "crop": 128, "batch_size": 16},
            {"fraction": 0.25, "crop": 256, "batch_size": 8, "adversarial": True},
        ],
    )
    assert [(p.start, p.end, p.crop, p.adversarial) for p in phases] == [(0, 8, 128, False), (8, 10, 256, True)]
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_thread_tuner_prefers_the_faster_setting() -> None:
    previous = torch.get_num_threads()
    try:
        tuner = ThreadTuner(2, probe_every=5)
        timings = {1: 1.0, 2: 3.0}
        chosen = []
        for step in range(1, 12):
            chosen.append(tuner.choose(step))
            tuner.record(timings[tuner.current])
        assert chosen[:2] == [2, 1]
        assert chosen.count(1) > chosen.count(2)
        assert 2 in chosen[2:]  # probes the other setting now and then
    finally:
        torch.set_num_threads(previous)


# --- the documented command ----------------------------------------------------------------


def run_training(out_dir: Path, images: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "lama_refine.train",
        f"train.out_dir={out_dir}",
        f"data.image_dir={images}",
        f"data.val_dir={images}",
        "model.ngf=8",
        "model.n_blocks=1",
        "train.phases=[{fraction:0.5,crop:32,batch_size:2},{fraction:0.5,crop:48,batch_size:2,adversarial:true}]",
        "train.val_every=2",
        "train.val_size=32",
        "train.val_per_photo=2",
        "train.val_view_short_side=48",
        "train.checkpoint_every=1",
        "train.warmup_steps=1",
        "train.threads=1",
        *overrides,
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_log(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow  # a subprocess
def test_training_smoke_run_and_resume(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs")
    out = tmp_path / "run"
    run_training(out, images, "train.steps=4")
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert [r["crop"] for r in log] == [32, 32, 48, 48]
    assert "adv" in log[-1] and "disc" in log[-1] and "adv" not in log[0]
    assert "val_l1" in log[1] and "val_psnr" in log[-1]
    assert all(np.isfinite(r["l1_hole"]) for r in log)
    assert (out / "checkpoints" / "last.pt").exists()

    from lama_refine.models.loading import load_generator

    generator = load_generator(out / "generator.safetensors").generator
    with torch.no_grad():
        pred = generator(torch.rand(1, 4, 32, 32))
    assert pred.shape == (1, 3, 32, 32)

    run_training(out, images, "train.steps=6", "train.resume=true")
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]  # resumed at 4, not restarted


@pytest.mark.slow  # a subprocess
def test_resume_continues_bit_for_bit(tmp_path: Path) -> None:
    """Two steps + resume for two more = four steps straight (weights and RNG restored)."""
    images = write_images(tmp_path / "imgs")
    run_training(tmp_path / "straight", images, "train.steps=4")
    run_training(tmp_path / "resumed", images, "train.steps=4", "train.checkpoint_every=2", "train.stop_after=2")
    run_training(tmp_path / "resumed", images, "train.steps=4", "train.resume=true")
    straight = [r["l1_hole"] for r in read_log(tmp_path / "straight")]
    resumed = [r["l1_hole"] for r in read_log(tmp_path / "resumed")]
    assert resumed == pytest.approx(straight, rel=1e-5)


@pytest.mark.parametrize("options", [{"input_fill": None}, {"input_fill": "diffusion"}], ids=["lama", "input-fill"])
@pytest.mark.slow  # seconds: full suite only
def test_export_writes_a_lama_section_unless_our_options_are_used(tmp_path: Path, options: dict) -> None:
    from omegaconf import OmegaConf

    from lama_refine.models import BIG_LAMA, build_generator
    from lama_refine.models.loading import load_generator
    from lama_refine.train.loop import export_generator

    model_cfg = {**BIG_LAMA, "ngf": 8, "n_downsampling": 2, "n_blocks": 1, **options}
    torch.manual_seed(0)
    generator = build_generator(model_cfg).eval()
    weights, config = export_generator(generator, model_cfg, tmp_path / "g", fp16=False)
    assert {p.name for p in tmp_path.iterdir()} == {"g.safetensors", "g.yaml"}  # no temporaries left
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in (weights, config))  # readable by all, not 0600
    section = OmegaConf.to_container(OmegaConf.load(config).generator)
    used = {k: v for k, v in options.items() if v}
    assert {k: section[k] for k in options if k in section} == used
    loaded = load_generator(weights).generator
    x = torch.rand(1, 4, 32, 32)
    x[:, 3] = (x[:, 3] > 0.6).float()
    x[:, :3] *= 1 - x[:, 3:]
    with torch.no_grad():
        assert torch.allclose(loaded(x), generator(x), atol=1e-6)


def test_family_summary_averages_each_family_and_counts_the_wins():
    from lama_refine.train.holdout import HighResRow, family_markdown

    rows = [
        HighResRow("a", "8x8", "thin", 1.0, 2, 0.10, 20.0, 0.08, 21.0, 1, 2),
        HighResRow("b", "8x8", "thin", 1.0, 2, 0.20, 15.0, 0.22, 14.0, 1, 2),
        HighResRow("a", "8x8", "thick", 1.0, 2, 0.30, 12.0, 0.27, 13.0, 1, 2),
    ]
    lines = {line.split(" | ")[0].strip("| "): line for line in family_markdown(rows).splitlines()[2:]}
    assert list(lines) == ["thin", "thick", "all"]
    assert "| thin | 2 | 0.1500 / 17.50 | 0.1500 / 17.50 |" in lines["thin"] and lines["thin"].endswith("1 of 2 |")
    assert "-10.0 % | +1.00 dB | 1 of 1" in lines["thick"]
    assert lines["all"].endswith("2 of 3 |")
