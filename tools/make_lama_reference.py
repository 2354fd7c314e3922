"""Make tests/fixtures/default-model-lama/: LaMa's own outputs on a trained model and a real photo.

    python tools/make_lama_reference.py --lama /path/to/lama [--model PATH] [--out DIR]

`--lama` is a checkout of advimman/lama (its code is run from there, never copied into this
repository). `--model` (default: the shipped default model, lama_refine/weights/default.safetensors)
must be a file inside this repository, since tests/models/lama/test_lama_reference.py loads the model the
fixture names; it must be a plain LaMa generator (no `input_fill`), or the export refuses it.

Regenerating after the default model is retrained is one command (then `git rm` any
`model.safetensors` / `model.yaml` left in the fixture folder from a development model):

    python tools/make_lama_reference.py --lama /path/to/lama

What it does:
1. exports the model to a LaMa experiment folder in a temp dir (`export_lama_experiment`, the same
   as `lama-refine-convert MODEL DIR --to lama-experiment`);
2. loads it as LaMa's `bin/predict.py` does: `yaml.safe_load` -> `OmegaConf.create`,
   `training_model.predict_only = True`, `visualizer.kind = 'noop'`, LaMa's `load_checkpoint(...,
   strict=False, map_location='cpu')` (unpatched: the exported checkpoint is plain data, so the
   default `torch.load(weights_only=True)` reads it) and `model.freeze()`;
3. on a 192x256 crop of a held-out example photo (a 384x512 region of examples/ladybird.jpg,
   halved) and a seeded LaMa "thick" mask, read through LaMa's `InpaintingDataset` (what
   `make_default_val_dataset` builds for `kind: default`) and `default_collate`, writes
   `plain.npy` (predict.py's non-refine branch verbatim, cropped to the input size) and
   `refined.npy` (`refine_predict` with `params.json`: 2 scales, 4 iterations), float32 HxWx3;
4. writes `image.png`, `mask.png`, `params.json` and `meta.json` (LaMa commit, versions, the
   model's repository path and sha256, how LaMa's code was run).

Running LaMa's code needs, beside this project's dependencies: `pip install --no-deps
pytorch-lightning lightning-utilities torchmetrics easydict` and `pip install pandas scikit-image` (no second
torch). Modules that only training imports and whose dependencies are not installed (albumentations
0.5 with imgaug, webdataset, torchvision, LPIPS/FID, the ADE20k segmentation net) are replaced by
stubs that raise if called; `refine_predict`'s `torch.device('cuda:N')` is mapped to the CPU.
The list is in meta.json (`lama.stubs`). Nothing else of LaMa is changed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import platform
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
# lama_refine is imported where it is used: `import_lama` and `_CpuDevices` are reused by
# benchmarks/bench.py in a venv that may hold only LaMa's requirements.

OUT = ROOT / "tests" / "fixtures" / "default-model-lama"
SOURCE = ROOT / "examples" / "ladybird.jpg"
TOP, LEFT, REGION_HW, SIZE_HW = 200, 640, (384, 512), (192, 256)  # the ladybird and its stem
MASK_FAMILY, MASK_SEED = "thick", 0  # 27 % of the crop; survives the loss mask erosion
PARAMS = {  # refine_predict's arguments (bin/predict.py's refiner section); 2 scales at this size
    "gpu_ids": "0,",
    "modulo": 8,
    "n_iters": 4,
    "lr": 0.002,
    "min_side": 96,
    "max_scales": 3,
    "px_budget": 1800000,
}
VERSION_OF = {
    "torch": "torch",
    "kornia": "kornia",
    "pytorch_lightning": "pytorch-lightning",
    "numpy": "numpy",
    "omegaconf": "omegaconf",
    "PIL": "pillow",
    "cv2": "opencv",
    "easydict": "easydict",
    "pandas": "pandas",
    "yaml": "PyYAML",
}  # module -> name

# LaMa modules imported on the way to load_checkpoint / refine_predict that only training uses,
# with the names importers take from them. Each stub raises when called.
STUBS = {
    "saicinpainting.evaluation": ["make_evaluator"],  # package __init__ only: LPIPS, FID, sklearn
    "saicinpainting.training.data.datasets": [  # albumentations 0.5 + imgaug, webdataset
        "make_default_train_dataloader",
        "make_default_val_dataloader",
        "make_constant_area_crop_params",
    ],
    "saicinpainting.training.losses.perceptual": [
        "PerceptualLoss",
        "ResNetPL",
        "IMAGENET_MEAN",
        "IMAGENET_STD",
    ],  # torchvision, ADE20k net
    "saicinpainting.training.losses.distance_weighting": ["make_mask_distance_weighter"],  # torchvision
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The crop (uint8 HxWx3) and its mask (uint8 HxW, 255 = hole)."""
    from lama_refine.train.mask_families import seeded_mask

    photo = np.asarray(Image.open(SOURCE).convert("RGB"))
    region = Image.fromarray(photo[TOP : TOP + REGION_HW[0], LEFT : LEFT + REGION_HW[1]])
    crop = np.asarray(region.resize(SIZE_HW[::-1], Image.LANCZOS))
    mask = (seeded_mask(*SIZE_HW, MASK_FAMILY, MASK_SEED) > 0).astype(np.uint8) * 255
    return crop, mask


def _raiser(module: str, name: str):
    def stub(*args, **kwargs):
        raise RuntimeError(f"{module}.{name} is a stub of make_lama_reference.py (training only)")

    return stub


def import_lama(lama: Path) -> types.SimpleNamespace:
    """LaMa's loading, dataset and refinement code from the checkout, with the STUBS in place."""
    sys.path.insert(0, str(lama))
    for module, names in STUBS.items():
        stub = types.ModuleType(module)
        if module == "saicinpainting.evaluation":  # keep the real submodules importable
            stub.__path__ = [str(lama / "saicinpainting" / "evaluation")]
        for name in names:
            setattr(stub, name, _raiser(module, name))
        sys.modules[module] = stub
    trainers = importlib.import_module("saicinpainting.training.trainers")
    refinement = importlib.import_module("saicinpainting.evaluation.refinement")
    data = importlib.import_module("saicinpainting.evaluation.data")
    refinement.torch = _CpuDevices()  # refine_predict builds torch.device(f"cuda:{i}")
    return types.SimpleNamespace(
        load_checkpoint=trainers.load_checkpoint,
        refine_predict=refinement.refine_predict,
        InpaintingDataset=data.InpaintingDataset,
    )


class _CpuDevices:
    """The real torch, except that `device(...)` is the CPU: the device split runs as written."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def device(*args, **kwargs):
        return torch.device("cpu")


def load_like_predict(lama: types.SimpleNamespace, experiment: Path):
    """bin/predict.py's loading, line for line."""
    from lama_refine.models.lama.export import CHECKPOINT_NAME

    with open(experiment / "config.yaml") as f:
        train_config = OmegaConf.create(yaml.safe_load(f))
    train_config.training_model.predict_only = True
    train_config.visualizer.kind = "noop"
    model = lama.load_checkpoint(
        train_config, str(experiment / "models" / CHECKPOINT_NAME), strict=False, map_location="cpu"
    )
    model.freeze()
    # load_checkpoint's strict=False would hide a key that did not fit: check every tensor arrived.
    exported = torch.load(experiment / "models" / CHECKPOINT_NAME, weights_only=True)["state_dict"]
    got = {f"generator.{k}": v for k, v in model.generator.state_dict().items()}
    if got.keys() != exported.keys() or any(not torch.equal(got[k], exported[k]) for k in got):
        raise SystemExit("LaMa's load_checkpoint did not load every exported generator tensor")
    return model


def run_lama(lama: types.SimpleNamespace, model, indir: Path) -> tuple[np.ndarray, np.ndarray]:
    from torch.utils.data._utils.collate import default_collate

    dataset = lama.InpaintingDataset(str(indir) + "/", img_suffix=".png", pad_out_to_modulo=PARAMS["modulo"])
    assert len(dataset) == 1
    # Plain: bin/predict.py's non-refine branch (the mask binarised to int64, as there).
    with torch.no_grad():
        batch = default_collate([dataset[0]])
        batch["mask"] = (batch["mask"] > 0) * 1
        batch = model(batch)
        plain = batch["inpainted"][0].permute(1, 2, 0).detach().cpu().numpy()
        h, w = batch["unpad_to_size"]
        plain = plain[: int(h), : int(w)]
    # Refined: the batch straight from the dataset, as bin/predict.py passes it.
    refined = lama.refine_predict(default_collate([dataset[0]]), model, **PARAMS)
    refined = refined[0].permute(1, 2, 0).detach().cpu().numpy()
    return plain.astype(np.float32), refined.astype(np.float32)


def lama_commit(lama: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(
            ["git", "-C", str(lama), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout; pass --lama-commit)"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for module, name in VERSION_OF.items():
        version = getattr(sys.modules.get(module), "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                version = "unknown"
        found[name] = version
    return found


def main(argv: list[str] | None = None) -> int:
    from lama_refine.models.lama.export import export_lama_experiment
    from lama_refine.weights import DEFAULT_MODEL_PATH

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lama", type=Path, required=True, help="checkout of advimman/lama")
    parser.add_argument("--lama-commit", help="its commit, when the checkout has no .git")
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL_PATH,
        help="model file inside this repository (default: the shipped default model)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"fixture folder (default: {OUT})")
    args = parser.parse_args(argv)
    model_path = args.model.resolve()
    if not model_path.is_relative_to(ROOT):
        parser.error(f"--model {args.model}: must be inside {ROOT} (the test loads it from there)")
    if not (args.lama / "saicinpainting").is_dir():
        parser.error(f"--lama {args.lama}: no saicinpainting/ folder there; expected an advimman/lama checkout")

    torch.manual_seed(0)
    torch.set_num_threads(2)
    lama = import_lama(args.lama.resolve())
    crop, mask = make_inputs()
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(crop).save(args.out / "image.png")
    Image.fromarray(mask).save(args.out / "mask.png")
    with tempfile.TemporaryDirectory() as tmp:
        experiment = export_lama_experiment(model_path, Path(tmp) / "experiment")
        model = load_like_predict(lama, experiment)
        indir = Path(tmp) / "in"
        indir.mkdir()
        (indir / "case.png").write_bytes((args.out / "image.png").read_bytes())
        (indir / "case_mask.png").write_bytes((args.out / "mask.png").read_bytes())
        plain, refined = run_lama(lama, model, indir)
    np.save(args.out / "plain.npy", plain)
    np.save(args.out / "refined.npy", refined)
    (args.out / "params.json").write_text(json.dumps(PARAMS, indent=1) + "\n")
    hole = mask > 0
    meta = {
        "model": {"path": model_path.relative_to(ROOT).as_posix(), "sha256": sha256(model_path)},
        "source_image": f"{SOURCE.relative_to(ROOT).as_posix()}[{TOP}:{TOP + REGION_HW[0]}, "
        f"{LEFT}:{LEFT + REGION_HW[1]}] resized to {SIZE_HW[0]}x{SIZE_HW[1]} (PIL LANCZOS)",
        "mask": f"lama_refine.train.mask_families.seeded_mask({SIZE_HW[0]}, {SIZE_HW[1]}, {MASK_FAMILY!r}, "
        f"{MASK_SEED}) * 255",
        "hole_fraction": round(float(hole.mean()), 4),
        "plain_vs_refined_max_abs_diff": float(np.abs(plain - refined).max()),
        "plain_vs_refined_mean_abs_diff_in_hole": float(np.abs(plain - refined)[hole].mean()),
        "lama": {
            "repository": "advimman/lama",
            "commit": lama_commit(args.lama, args.lama_commit),
            "loaded_via": "lama_refine.models.lama.export.export_lama_experiment, then bin/predict.py's "
            "loading: OmegaConf.create(yaml.safe_load(config.yaml)), predict_only=True, "
            "visualizer.kind='noop', original saicinpainting.training.trainers.load_checkpoint"
            "(strict=False, map_location='cpu') unpatched (torch.load's default "
            "weights_only=True reads the plain-data checkpoint), model.freeze()",
            "dataset": "saicinpainting.evaluation.data.InpaintingDataset(indir, img_suffix='.png', "
            "pad_out_to_modulo=8) + default_collate",
            "plain": "bin/predict.py non-refine branch: mask = (mask > 0) * 1, model(batch)['inpainted'], "
            "[0].permute(1, 2, 0), cropped to unpad_to_size",
            "refined": "saicinpainting.evaluation.refinement.refine_predict(batch, model, **params.json), "
            "[0].permute(1, 2, 0)",
            "stubs": {module: names for module, names in STUBS.items()},
            "patches": [
                "saicinpainting.evaluation.refinement.torch: the real torch with "
                "device(...) -> cpu (refine_predict builds cuda:N devices)"
            ],
            "lightning": "real pytorch_lightning (LightningModule base of LaMa's trainer modules)",
        },
        "torch_num_threads": torch.get_num_threads(),
        "versions": versions(),
        "regenerate": "python tools/make_lama_reference.py --lama /path/to/lama",
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out}: plain vs refined max |diff| {meta['plain_vs_refined_max_abs_diff']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
