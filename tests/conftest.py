"""Shared fixtures: the golden cases measured on the original LaMa implementation."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from lama_refine.io import read_image, read_mask
from lama_refine.models import build_generator
from lama_refine.perf.allocator import REEXEC_MARK

FIXTURES = Path(__file__).parent / "fixtures"

# The test folders mirror the package; a test module may share another's helpers by its plain name
# (`from test_download import FileServer`), whichever folder it sits in.
for _folder in sorted(Path(__file__).parent.glob("**/")):
    if _folder.name not in ("fixtures", "__pycache__") and FIXTURES not in _folder.parents:
        sys.path.insert(0, str(_folder))
GOLDEN = FIXTURES / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


@dataclass
class Case:
    """One golden case: inputs, parameters and the original's outputs."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def params(self) -> dict:
        return json.loads((self.path / "params.json").read_text())

    @cached_property
    def meta(self) -> dict:
        return json.loads((self.path / "meta.json").read_text())

    @cached_property
    def losses(self) -> dict:
        return json.loads((self.path / "losses.json").read_text())

    @cached_property
    def pyramid(self) -> dict[str, np.ndarray]:
        return dict(np.load(self.path / "pyramid.npz"))

    @cached_property
    def scales(self) -> dict[str, np.ndarray]:
        return dict(np.load(self.path / "scales.npz"))

    def npy(self, name: str) -> np.ndarray:
        return np.load(self.path / f"{name}.npy")

    def image(self) -> torch.Tensor:
        return read_image(self.path / "image.png")

    def mask(self) -> torch.Tensor:
        return read_mask(self.path / "mask.png")

    def generator(self) -> torch.nn.Module:
        """Built from generator.yaml + safetensors directly (independent of the package's loader)."""
        g = build_generator(OmegaConf.load(self.path / "generator.yaml"))
        g.load_state_dict(load_file(self.path / "generator.safetensors"))
        return g.eval().requires_grad_(False)

    @property
    def n_devices(self) -> int:
        return len([t for t in self.params["gpu_ids"].replace(" ", "").split(",") if t.isdigit()])

    def overrides(self) -> list[str]:
        """The case's refiner parameters as CLI overrides (CPU devices stand in for its GPUs)."""
        p = self.params
        return [
            f"refiner.n_iters={p['n_iters']}",
            f"refiner.lr={p['lr']}",
            f"modulo={p['modulo']}",
            f"pyramid.min_side={p['min_side']}",
            f"pyramid.max_scales={p['max_scales']}",
            f"pyramid.px_budget={p['px_budget']}",
            "devices=[" + ",".join(["cpu"] * self.n_devices) + "]",
        ]


@pytest.fixture(autouse=True)
def no_allocator_reexec(monkeypatch):
    """`lama-refine` re-executes itself with tcmalloc preloaded where it is installed (the default
    perf.allocator=auto): a test calling cli.entry() in this process would restart pytest. The
    mark says "re-executed already" (the allocator tests remove it where they test the re-exec)."""
    monkeypatch.setenv(REEXEC_MARK, "1")


@pytest.fixture(params=CASES)
def case(request) -> Case:
    return Case(GOLDEN / request.param)


def max_mean_diff(a, b) -> tuple[float, float]:
    d = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return float(d.max()), float(d.mean())
