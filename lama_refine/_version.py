"""The package's version, in one place: setuptools reads it for the distribution's metadata
(pyproject.toml, `[tool.setuptools.dynamic]`) and `lama_refine.__version__` re-exports it."""

__version__ = "0.2.0.dev0"
