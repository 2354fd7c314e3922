"""The release facts agree: one version, a LICENSE matching pyproject, py.typed shipped, a
CHANGELOG whose newest entry is this version, and the tools' configurations in pyproject."""

import importlib.metadata
import re
from pathlib import Path

import pytest

import lama_refine
from lama_refine._version import __version__

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_version_is_written_once_and_the_installed_metadata_agrees():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lama_refine._version.__version__"}
    assert lama_refine.__version__ == __version__
    # an install older than the last version change says so here: reinstall (pip install -e .)
    assert importlib.metadata.version("lama-refine") == __version__


def test_the_changelog_starts_with_this_version():
    first = re.search(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert first is not None and __version__.startswith(first.group(1))


def test_the_license_file_is_the_license_pyproject_names():
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_py_typed_is_in_the_package_and_its_data():
    assert (Path(lama_refine.__file__).parent / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["lama_refine"]


def test_the_linters_are_configured_and_installed_by_the_test_extra():
    lint = PYPROJECT["tool"]["ruff"]["lint"]
    assert {"E", "F", "W", "I", "UP", "B"} <= set(lint["select"])
    assert PYPROJECT["tool"]["mypy"]["check_untyped_defs"] is True
    test_extra = " ".join(PYPROJECT["project"]["optional-dependencies"]["test"])
    assert "ruff" in test_extra and "mypy" in test_extra
