"""Speed and memory machinery, unaware of any model kind: the lean frozen-weight backward (lean), row bands
(tiling), the perf switches applied to a partition (switches), the peak-memory model (memory) and the
allocator choice (allocator). Model-specific answers come from the generator protocol (models.protocol).
"""

from lama_refine._compat import old_names

__getattr__ = old_names(__name__, "switches")
