"""0.1's module paths keep working for one release, each with a DeprecationWarning (lama_refine._compat)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import get_class

import lama_refine
from lama_refine import _compat


def test_every_old_path_is_gone_and_its_new_home_imports():
    package = Path(lama_refine.__file__).parent
    for old, new in _compat.MOVED.items():
        assert not package.joinpath(*old.split(".")[1:]).with_suffix(".py").exists(), old
        assert importlib.import_module(new).__name__ == new


def test_an_old_import_warns_and_gives_the_same_module():
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    from lama_refine.refine import L1Refiner\n"
        "import lama_refine.parts.refine as new\n"
        "print(L1Refiner is new.L1Refiner, new.__name__, [str(x.message) for x in w])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("True lama_refine.parts.refine ")
    assert "lama_refine.refine moved to lama_refine.parts.refine" in out


def test_an_old_target_in_a_users_yaml_still_builds():
    with pytest.warns(DeprecationWarning, match="lama_refine.downsample moved"):
        cls = get_class("lama_refine.downsample.BlurMaskDownsampler")
    assert cls.__module__ == "lama_refine.parts.downsample"


def test_old_names_of_a_module_that_became_a_package():
    with pytest.warns(DeprecationWarning, match=r"lama_refine.batch.Batch moved to lama_refine.batch.runner.Batch"):
        from lama_refine.batch import Batch
    from lama_refine.batch.runner import Batch as new

    assert Batch is new
    from lama_refine.batch import sweep  # a submodule is imported, not looked up as an old name

    assert sweep.__name__ == "lama_refine.batch.sweep"
    with pytest.raises(ImportError):
        from lama_refine.perf import no_such_name  # noqa: F401


def test_a_moved_target_is_hashed_as_first_written():
    assert _compat.as_first_written("lama_refine.parts.refine.L1Refiner") == "lama_refine.refine.L1Refiner"
    assert _compat.as_first_written("lama_refine.io.inputs") == "lama_refine.io.masks"
    assert _compat.as_first_written("lama_refine.partsx.Y") == "lama_refine.partsx.Y"
    assert _compat.as_first_written("torch.optim.Adam") == "torch.optim.Adam"
