"""Folders of jobs: the batch loop, its manifest and rerun rules, shards and out-of-memory retries (runner),
and a --multirun job's output folder (sweep).
"""


def __getattr__(name: str) -> object:
    # 0.1's `lama_refine.batch` was one module, now `batch.runner`: its names stay reachable for one release
    import importlib
    import importlib.util
    import warnings

    # a submodule (`from lama_refine.batch import sweep`) is the import system's to load, not an old name
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.runner")
    if not hasattr(module, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__}.{name} moved to {__name__}.runner.{name} in lama-refine 0.2; the old path goes in 0.3",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(module, name)
