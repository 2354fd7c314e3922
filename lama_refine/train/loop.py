"""The training loop of the built-in demo model: seeded, checkpointed, resumable, CPU-sized.

One run is a list of phases (fractions of `train.steps`), each with its crop size, batch size
and whether the adversarial terms are on. The shipped recipe spends most steps on cheap
128 px crops, where the network learns to fill at all, and the rest on 256 px crops with the
PatchGAN on, where it learns LaMa's training resolution and sharper texture.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from lama_refine.io import write_atomic
from lama_refine.models import NON_LAMA_OPTIONS, build_generator, generator_config
from lama_refine.models.protocol import hole_zeroed_and_mask
from lama_refine.train import data as datamod
from lama_refine.train.losses import (
    PatchDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    gradient_loss,
    masked_l1,
    psnr,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """A range of steps with one crop size, batch size and adversarial switch."""

    start: int
    end: int
    crop: int
    batch_size: int
    adversarial: bool


def plan_phases(steps: int, phases: list[Mapping[str, Any]]) -> list[Phase]:
    """Turn `fraction`s of `steps` into step ranges; the last phase takes the rounding rest."""
    total = sum(float(p["fraction"]) for p in phases)
    out, start = [], 0
    for i, p in enumerate(phases):
        end = steps if i == len(phases) - 1 else start + int(round(steps * float(p["fraction"]) / total))
        out.append(Phase(start, end, int(p["crop"]), int(p["batch_size"]), bool(p.get("adversarial", False))))
        start = end
    return out


def phase_at(phases: list[Phase], step: int) -> Phase:
    return next((p for p in phases if p.start <= step < p.end), phases[-1])


def lr_factor(step: int, steps: int, warmup: int, final: float) -> float:
    """Linear warm-up, then cosine decay to `final` times the base rate.

    A short CPU run cannot afford a long plateau; annealing at the end is what turns the
    last few hundred noisy steps into a usable model.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class ThreadTuner:
    """Picks the faster of 1 or `max_threads` intra-op threads from measured step times.

    The training machine is shared: when another process holds one of the two cores, a
    2-thread step waits on its starved thread and runs several times slower than a 1-thread
    step. The tuner keeps a running mean step time per setting, uses the faster one and
    re-measures the other every `probe_every` steps, so the run follows the machine's load.
    Thread count changes only the order of float sums, not the recipe.
    """

    def __init__(self, max_threads: int, probe_every: int = 20, smoothing: float = 0.3):
        self.choices = sorted({1, max(1, max_threads)})
        self.probe_every = probe_every
        self.smoothing = smoothing
        self.reset()

    def reset(self) -> None:
        """Forget timings (a new phase has a different step cost)."""
        self.times: dict[int, float] = {}
        self.current = self.choices[-1]
        self.probing = False

    def choose(self, step: int) -> int:
        untried = [c for c in self.choices if c not in self.times]
        self.probing = False
        if untried:
            self.current = untried[-1]
        else:
            best = min(self.choices, key=self.times.__getitem__)
            self.probing = step % self.probe_every == 0 and len(self.choices) > 1
            self.current = next(c for c in self.choices if c != best) if self.probing else best
        torch.set_num_threads(self.current)
        return self.current

    def record(self, seconds: float) -> None:
        """A probe replaces the old estimate (the load may have changed since); use smooths it."""
        old = self.times.get(self.current)
        fresh = old is None or self.probing
        self.times[self.current] = seconds if fresh or old is None else old + self.smoothing * (seconds - old)


def network_input(images: Tensor, masks: Tensor) -> Tensor:
    """LaMa's input: the image with the hole zeroed, plus the mask (as LaMa's trainer builds it;
    the generator protocol's default input, one rule for training and refinement)."""
    return hole_zeroed_and_mask(images, masks)


@dataclass
class Models:
    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


def build_models(cfg: DictConfig) -> Models:
    """Generator (through the same `build_generator` big-lama uses), discriminator, optimisers."""
    generator = build_generator(cast("dict[str, Any]", OmegaConf.to_container(cfg.model, resolve=True)))
    discriminator = PatchDiscriminator(ndf=cfg.train.disc_ndf, n_layers=cfg.train.disc_layers)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.train.disc_lr, betas=tuple(cfg.train.disc_betas))
    return Models(generator, discriminator, opt_g, opt_d)


def generator_losses(
    cfg: DictConfig, models: Models, images: Tensor, masks: Tensor, adversarial: bool
) -> tuple[Tensor, dict[str, float], Tensor]:
    """The generator's weighted loss, its parts (for logging) and the composite."""
    w = cfg.train.loss
    pred = models.generator(network_input(images, masks))
    composite = masks * pred + (1 - masks) * images
    parts = {
        "l1_hole": masked_l1(pred, images, masks),
        # The known pixels matter too: the refiner fits the raw prediction to them (the known-pixel L1 term).
        "l1_known": masked_l1(pred, images, 1 - masks),
        "grad": gradient_loss(pred, images, masks),
    }
    total = w.l1_hole * parts["l1_hole"] + w.l1_known * parts["l1_known"] + w.grad * parts["grad"]
    if adversarial:
        fake_logits, fake_feats = models.discriminator(composite)
        with torch.no_grad():
            _, real_feats = models.discriminator(images)
        parts["adv"] = generator_adversarial_loss(fake_logits, masks)
        parts["fm"] = feature_matching_loss(fake_feats, real_feats, masks)
        total = total + w.adv * parts["adv"] + w.fm * parts["fm"]
    return total, {k: float(v.detach()) for k, v in parts.items()}, composite


def discriminator_step(models: Models, images: Tensor, composite: Tensor, masks: Tensor) -> float:
    real_logits, _ = models.discriminator(images)
    fake_logits, _ = models.discriminator(composite.detach())
    loss = discriminator_loss(real_logits, fake_logits, masks)
    models.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    models.opt_d.step()
    return float(loss)


@torch.no_grad()
def evaluate(generator: nn.Module, images: Tensor, masks: Tensor, batch_size: int = 8) -> dict[str, float]:
    """Hole-region L1 and PSNR of the composite, eval-mode BatchNorm (what ships)."""
    was_training = generator.training
    generator.eval()
    l1, ps = [], []
    for i in range(0, len(images), batch_size):
        x, m = images[i : i + batch_size], masks[i : i + batch_size]
        pred = generator(network_input(x, m))
        out = m * pred + (1 - m) * x
        l1 += [float(masked_l1(o[None], t[None], mm[None])) for o, t, mm in zip(out, x, m, strict=True)]
        ps += psnr(out, x, m).tolist()
    generator.train(was_training)
    return {"val_l1": float(np.mean(l1)), "val_psnr": float(np.mean(ps))}


def save_checkpoint(path: Path, step: int, models: Models, rng: np.random.Generator) -> None:
    """Everything needed to resume bit-for-bit: weights, optimiser moments, both RNG states."""
    state = {
        "step": step,
        "generator": models.generator.state_dict(),
        "discriminator": models.discriminator.state_dict(),
        "opt_g": models.opt_g.state_dict(),
        "opt_d": models.opt_d.state_dict(),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: Path, models: Models, rng: np.random.Generator) -> int:
    """Restore a `save_checkpoint` file (our own format, loaded with weights_only=True)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    models.generator.load_state_dict(state["generator"])
    models.discriminator.load_state_dict(state["discriminator"])
    models.opt_g.load_state_dict(state["opt_g"])
    models.opt_d.load_state_dict(state["opt_d"])
    rng.bit_generator.state = json.loads(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def export_generator(
    generator: nn.Module,
    model_cfg: Mapping[str, Any] | DictConfig,
    stem: Path | str,
    fp16: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write `stem.safetensors` (eval-mode weights and BatchNorm statistics) and `stem.yaml`.

    The yaml holds a LaMa `generator:` section, which is what `load_generator` reads beside
    a `.safetensors` file. fp16 storage halves the file; the loader upcasts to float32.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in generator.state_dict().items():
        value = value.detach().cpu().contiguous()
        tensors[key] = value.half() if fp16 and value.is_floating_point() else value
    weights = stem.with_suffix(".safetensors")
    # through io.write_atomic: whole files only, with the usual mode (safetensors' own writer
    # creates 0600 files)
    write_atomic(weights, lambda tmp: save_file(tensors, str(tmp), metadata=dict(metadata or {})))
    config = stem.with_suffix(".yaml")
    # any Mapping works here; omegaconf's overloads name only dict and DictConfig
    model = OmegaConf.create(model_cfg)  # type: ignore[arg-type]
    section = generator_config(OmegaConf.create({"generator": OmegaConf.to_container(model, resolve=True)}))
    # Our own generator options at their LaMa defaults are left out: the yaml stays a plain
    # LaMa `generator:` section wherever the model is one.
    for key, lama_default in NON_LAMA_OPTIONS.items():
        if key in section and section[key] == lama_default:
            del section[key]
    write_atomic(config, lambda tmp: OmegaConf.save(OmegaConf.create({"generator": section}), tmp))
    return weights, config


def load_training_photos(cfg: DictConfig) -> tuple[list[Tensor], dict[str, np.ndarray]]:
    """Training photos (as tensors) and validation photos (uint8), per `cfg.data`."""
    d = cfg.data
    if d.image_dir is not None:
        train = datamod.load_photos(image_dir=d.image_dir, max_short_side=d.max_short_side)
        val = datamod.load_photos(image_dir=d.val_dir, max_short_side=None) if d.val_dir else {}
    else:
        holdout = list(d.holdout)
        train = datamod.load_photos(cache=d.cache, max_short_side=d.max_short_side, exclude=holdout)
        val = datamod.load_photos(holdout, cache=d.cache, max_short_side=None)
    overlap = set(train) & set(val)
    if overlap and d.image_dir is None:
        raise ValueError(f"held-out photos in the training set: {sorted(overlap)}")
    log.info("training photos: %d, validation photos: %d", len(train), len(val))
    return [datamod.to_tensor(p) for p in train.values()], val


def train(cfg: DictConfig) -> Path:
    """Run (or resume) a training run; returns the exported `generator` stem in `out_dir`."""
    t = cfg.train
    torch.set_num_threads(int(t.threads))
    torch.manual_seed(int(t.seed))
    rng = np.random.default_rng(int(t.seed))
    out_dir = Path(t.out_dir).expanduser()
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    last = out_dir / "checkpoints" / "last.pt"

    photos, val_photos = load_training_photos(cfg)
    val_images, val_masks = None, None
    if val_photos:
        val_images, val_masks, _ = datamod.validation_set(
            val_photos,
            size=t.val_size,
            per_photo=t.val_per_photo,
            seed=t.val_seed,
            view_short_side=t.val_view_short_side,
        )
    models = build_models(cfg)
    models.generator.train()
    step = 0
    if t.resume and last.exists():
        step = load_checkpoint(last, models, rng)
        log.info("resumed from %s at step %d", last, step)
    sampler = datamod.CropSampler(photos, rng, dict(cfg.data.mask_weights))
    phases = plan_phases(int(t.steps), cast("list[Mapping[str, Any]]", OmegaConf.to_container(t.phases, resolve=True)))
    log.info("phases: %s", phases)

    log_file = (out_dir / "log.jsonl").open("a")
    started = time.time()
    bar = tqdm(total=int(t.steps), initial=step, desc="train", dynamic_ncols=True)
    tuner = ThreadTuner(int(t.threads)) if t.adaptive_threads else None
    current_phase = None
    while step < t.steps:
        phase = phase_at(phases, step)
        if tuner is not None:
            if phase != current_phase:
                tuner.reset()
            tuner.choose(step)
        current_phase = phase
        step_started = time.time()
        factor = lr_factor(step, int(t.steps), int(t.warmup_steps), float(t.final_lr_fraction))
        for group in models.opt_g.param_groups:
            group["lr"] = t.lr * factor
        for group in models.opt_d.param_groups:
            group["lr"] = t.disc_lr * factor
        images, masks = sampler.batch(phase.batch_size, phase.crop)
        loss, parts, composite = generator_losses(cfg, models, images, masks, phase.adversarial)
        models.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            nn.utils.clip_grad_norm_(models.generator.parameters(), float(t.grad_clip))
        models.opt_g.step()
        if phase.adversarial:
            parts["disc"] = discriminator_step(models, images, composite, masks)
        if tuner is not None:
            tuner.record(time.time() - step_started)
        step += 1
        bar.update(1)
        bar.set_postfix(crop=phase.crop, l1=f"{parts['l1_hole']:.4f}")
        record: dict[str, Any] = {
            "step": step,
            "lr": t.lr * factor,
            "crop": phase.crop,
            "threads": torch.get_num_threads(),
            **parts,
        }
        if val_images is not None and val_masks is not None and (step % t.val_every == 0 or step == t.steps):
            record.update(evaluate(models.generator, val_images, val_masks))
            bar.write(f"step {step}: val L1 {record['val_l1']:.4f}, PSNR {record['val_psnr']:.2f} dB")
        record["elapsed_s"] = round(time.time() - started, 1)
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        stop = t.stop_after is not None and step >= t.stop_after
        if step % t.checkpoint_every == 0 or step == t.steps or stop:
            save_checkpoint(last, step, models, rng)
        if stop:  # a planned interruption (tests, time slots): resume with train.resume=true
            log.info("stopping after step %d as asked; resume with train.resume=true", step)
            break
    bar.close()
    log_file.close()
    if step < t.steps:
        return out_dir / "checkpoints" / "last"

    models.generator.eval()
    stem = out_dir / "generator"
    export_generator(
        models.generator,
        cfg.model,
        stem,
        fp16=bool(t.export_fp16),
        metadata={"steps": str(int(t.steps)), "seed": str(int(t.seed))},
    )
    if t.export_to:
        export_generator(
            models.generator,
            cfg.model,
            Path(t.export_to).expanduser(),
            fp16=bool(t.export_fp16),
            metadata={"steps": str(int(t.steps)), "seed": str(int(t.seed))},
        )
    log.info("exported %s.safetensors / .yaml", stem)
    return stem


__all__ = [
    "Models",
    "Phase",
    "build_models",
    "evaluate",
    "export_generator",
    "generator_losses",
    "ThreadTuner",
    "load_checkpoint",
    "load_training_photos",
    "lr_factor",
    "network_input",
    "plan_phases",
    "save_checkpoint",
    "train",
]
