"""Speed and memory machinery, unaware of any model kind: the lean frozen-weight backward (lean), row bands
(tiling), the perf switches applied to a partition (switches), the peak-memory model (memory) and the
allocator choice (allocator). Model-specific answers come from the generator protocol (models.protocol).
"""


def __getattr__(name: str) -> object:
    # 0.1's `lama_refine.perf` was one module, now `perf.switches`: its names stay reachable for one release
    import importlib
    import importlib.util
    import warnings

    # a submodule (`from lama_refine.perf import sweep`) is the import system's to load, not an old name
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.switches")
    if not hasattr(module, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__}.{name} moved to {__name__}.switches.{name} in lama-refine 0.2; the old path goes in 0.3",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(module, name)
