"""The 0.1 module paths, importable for one release (until 0.3) with a DeprecationWarning.

0.2 moved the flat modules into sub-packages (CHANGELOG.md). Old imports and `_target_` paths in
user configs (`lama_refine.downsample.BlurMaskDownsampler`) keep working through this finder: it
answers only for the names below and hands back the module at its new home, so both names are one
module object (classes, monkeypatches and isinstance checks agree).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable

MOVED: dict[str, str] = {
    "lama_refine.allocator": "lama_refine.perf.allocator",
    "lama_refine.api": "lama_refine.app.api",
    "lama_refine.claims": "lama_refine.batch.claims",
    "lama_refine.cli": "lama_refine.app.cli",
    "lama_refine.download": "lama_refine.app.download",
    "lama_refine.downsample": "lama_refine.parts.downsample",
    "lama_refine.eval_records": "lama_refine.batch.eval_records",
    "lama_refine.evaluate": "lama_refine.app.evaluate",
    "lama_refine.io.masks": "lama_refine.io.inputs",
    "lama_refine.lean": "lama_refine.perf.lean",
    "lama_refine.lpips": "lama_refine.metrics.lpips",
    "lama_refine.memory": "lama_refine.perf.memory",
    "lama_refine.models.export_lama": "lama_refine.models.lama.export",
    "lama_refine.models.ffc": "lama_refine.models.lama.ffc",
    "lama_refine.models.fill": "lama_refine.models.lama.fill",
    "lama_refine.models.kinds": "lama_refine.models.lama.kinds",
    "lama_refine.models.pix2pixhd": "lama_refine.models.lama.pix2pixhd",
    "lama_refine.padding": "lama_refine.parts.padding",
    "lama_refine.partition": "lama_refine.parts.partition",
    "lama_refine.progress": "lama_refine.app.progress",
    "lama_refine.provenance": "lama_refine.batch.provenance",
    "lama_refine.pyramid": "lama_refine.parts.pyramid",
    "lama_refine.refine": "lama_refine.parts.refine",
    "lama_refine.slurm": "lama_refine.batch.slurm",
    "lama_refine.stats": "lama_refine.metrics.stats",
    "lama_refine.sweep": "lama_refine.batch.sweep",
    "lama_refine.tiling": "lama_refine.perf.tiling",
    "lama_refine.train.evaluate": "lama_refine.train.holdout",
    "lama_refine.train.masks": "lama_refine.train.mask_families",
    "lama_refine.usage": "lama_refine.app.usage",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        new = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {new} in lama-refine 0.2; the old path goes in 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        # the import system returns whatever sys.modules holds once exec_module is done
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())


def old_names(package: str, module: str) -> Callable[[str], object]:
    """A package's `__getattr__` for 0.1's names of the one module it replaced (`lama_refine.batch`
    was `batch/runner.py`'s contents): each still resolves, with a DeprecationWarning, until 0.3."""

    def __getattr__(name: str) -> object:
        # a submodule (`from lama_refine.batch import sweep`) is the import system's to load, not an old name
        if name.startswith("_") or importlib.util.find_spec(f"{package}.{name}") is not None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = importlib.import_module(f"{package}.{module}")
        if not hasattr(target, name):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        warnings.warn(
            f"{package}.{name} moved to {package}.{module}.{name} in lama-refine 0.2; the old path goes in 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(target, name)

    return __getattr__


_NEW_TO_OLD = sorted(((new, old) for old, new in MOVED.items()), key=lambda pair: len(pair[0]), reverse=True)


def as_first_written(dotted: str) -> str:
    """A dotted path under a moved module, as 0.1 wrote it (`lama_refine.parts.refine.L1Refiner` ->
    `lama_refine.refine.L1Refiner`); anything else unchanged. Config hashes use it, so that a
    `_target_` that moved in 0.2 does not make a finished folder look made by other settings."""
    for new, old in _NEW_TO_OLD:
        if dotted == new or dotted.startswith(new + "."):
            return old + dotted[len(new) :]
    return dotted
