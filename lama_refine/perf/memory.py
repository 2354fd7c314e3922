"""Peak memory of a refinement, estimated before running it; `pyramid.px_budget=auto`.

The estimate is a sum of parts, each per pixel of the finest working scale unless said:

- what the rear's autograd graph keeps for backward (`saved`): measured exactly by running the
  tuned rear (lean or not, checkpointed or not) on the *meta* device, where tensors have shapes but
  no data, under `saved_tensors_hooks`; checkpointed blocks add their inputs and one block's
  recomputation, which those hooks cannot see;
- the working set around the widest full-resolution layer (`transient`): `TRANSIENT_COPIES` times
  the largest activation the rear produces (forward: conv output, norm output, padded copy;
  backward: the gradients of those);
- the refiner's own tensors (image, masks, prediction, loss terms) and the pyramid: a constant
  per pixel (`REFINER_BYTES_PER_PX`);
- fixed: the weights, plus on CPU the process itself (Python, torch, oneDNN: `CPU_PROCESS_BYTES`).

The constants were fitted on CPU peak RSS measurements (docs/benchmarks.md, where the predicted
and measured peaks stand side by side); the meta trace carries what depends on the model and on
the configuration, so another generator, or a smaller one of the same kind, needs no new constants.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lama_refine.models.protocol import Features, feature_tensors, is_block, map_tensors, probe_input
from lama_refine.parts.partition import EvenPartitioner, Partition, SavedBytes
from lama_refine.perf.allocator import assumed as assumed_allocator
from lama_refine.perf.switches import PerfConfig, tune_partition

CPU_PROCESS_BYTES = 400 * 2**20  # python + torch + oneDNN resident before any work
REFINER_BYTES_PER_PX = 120  # image, 3-channel masks, known, pred, loss terms, pyramid, results
TRANSIENT_COPIES = 3.0  # full-resolution activation-sized buffers alive at the peak
FREE_FRACTION = 0.8  # px_budget=auto leaves this share of the free memory for the estimate
# CPU with glibc's adaptive mmap threshold (perf.mmap_threshold_kb=null): freed feature maps stay
# resident in the heap, so the lean backward's per-pixel RSS is this many times its live bytes
# (fitted at 736x736: 2.26-2.47 GiB measured vs 1.09 GiB live; the faithful path, whose peak is
# its saved tensors, measured within 4 % of the live estimate without it). Not applied with
# perf.allocator=jemalloc|tcmalloc (assumed in effect: the pipeline warns when it is not), nor with
# perf.allocator=auto where this process runs on tcmalloc (lama_refine.perf.allocator.assumed).
HEAP_RETENTION = 3.7


@dataclass
class MemoryEstimate:
    """Peak memory of refining a (h, w) working image, in bytes, with its parts."""

    fixed: float
    saved: float
    transient: float
    refiner: float

    @property
    def total(self) -> float:
        return self.fixed + self.saved + self.transient + self.refiner


class _LargestOutput(TorchDispatchMode):
    """Records the largest tensor any op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def meta_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parameters and buffers live on the meta device (no data copied)."""
    memo: dict[int, Any] = {}
    for t in list(module.parameters()) + list(module.buffers()):
        meta = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(module, memo)


def meta_trace(
    generator: nn.Module, size: tuple[int, int], perf: PerfConfig, dtype: torch.dtype = torch.float32
) -> tuple[Partition, Features]:
    """The generator's rear tuned as `perf` says (lean or not; no checkpointing) and the front's
    output at padded size (h, w) as leaves requiring grad, all on the meta device: what every
    trace of the memory model starts from."""
    meta = meta_copy(generator).to(dtype).eval().requires_grad_(False)
    partition = EvenPartitioner().split(meta, [torch.device("meta")])
    # whole images: the model does not credit perf.tile_rows (an upper bound where it is on)
    tuned = tune_partition(partition, PerfConfig(lean_backward=perf.lean_backward, tile_rows=None))
    with torch.no_grad():
        features = partition.front(probe_input(meta, size, device="meta", dtype=dtype))
    return tuned, map_tensors(lambda f: f.detach().requires_grad_(True), features)


def trace_rear(
    generator: nn.Module, size: tuple[int, int], perf: PerfConfig, dtype: torch.dtype = torch.float32
) -> tuple[int, int]:
    """(bytes saved for backward, largest activation in bytes) of one forward of the rear,
    lean or not as `perf` says, at padded size (h, w), on the meta device.

    Checkpointing is accounted for by the caller (`checkpointed_saved`): traced here without it.
    """
    tuned, features = meta_trace(generator, size, perf, dtype)
    saved = SavedBytes(_weights(tuned))
    largest = _LargestOutput()
    with saved.hooks(), largest:
        tuned.run_rear(features)
    return saved.bytes, largest.largest


def _weights(partition: Partition) -> list[Tensor]:
    """The parameters and buffers of a partition's rear (the weights: counted apart from what autograd saves)."""
    return [t for stage in partition.rear for t in (*stage.module.parameters(), *stage.module.buffers())]


def checkpointed_saved(generator: nn.Module, size: tuple[int, int], perf: PerfConfig, saved: int) -> int:
    """Saved bytes with per-block checkpointing: outside the blocks as traced, plus each block's
    input, plus one block's own saved tensors while it is recomputed in backward."""
    tuned, features = meta_trace(generator, size, perf)
    blocks = [m for m in tuned.rear[0].module if is_block(m)]
    block_saved = SavedBytes(_weights(tuned))
    with block_saved.hooks():
        blocks[0](features)
    block_input = sum(f.numel() * f.element_size() for f in feature_tensors(features))
    n = len(blocks)
    return saved - n * block_saved.bytes + n * block_input + block_saved.bytes


def _padded(h: int, w: int, modulo: int = 8) -> tuple[int, int]:
    return -(-h // modulo) * modulo, -(-w // modulo) * modulo


def weight_bytes(generator: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(generator.parameters()) + list(generator.buffers()))


def estimate_peak(
    generator: nn.Module,
    size: tuple[int, int],
    perf: PerfConfig | None = None,
    device: torch.device | str = "cpu",
    input_size: tuple[int, int] | None = None,
    modulo: int = 8,
) -> MemoryEstimate:
    """Peak memory of refining a working image of `size` (h, w) (the finest scale, after the
    pixel budget), the photo being `input_size` (default: the same)."""
    perf = perf or PerfConfig()
    device = torch.device(device)
    h, w = _padded(*size, modulo)
    px = h * w
    saved: float  # bytes; float once scaled by HEAP_RETENTION below
    saved, largest = trace_rear(generator, (h, w), perf)
    if perf.checkpointing:
        saved = checkpointed_saved(generator, (h, w), perf, saved)
    low_precision = perf.amp is not None
    transient = TRANSIENT_COPIES * largest * (0.75 if low_precision else 1.0)
    input_px = (input_size[0] * input_size[1]) if input_size else size[0] * size[1]
    refiner: float = REFINER_BYTES_PER_PX * px + 16 * input_px
    fixed = weight_bytes(generator) + (CPU_PROCESS_BYTES if device.type == "cpu" else 0)
    # jemalloc / tcmalloc (perf.allocator) reuse freed blocks by size class: no heap retention
    if (
        device.type == "cpu"
        and perf.lean_backward
        and perf.mmap_threshold_kb is None
        and assumed_allocator(perf.allocator) is None
    ):
        saved, transient, refiner = (HEAP_RETENTION * x for x in (saved, transient, refiner))
    return MemoryEstimate(fixed=fixed, saved=saved, transient=transient, refiner=refiner)


def available_memory(device: torch.device | str) -> int:
    """Free memory for a new refinement: CUDA's free device memory, else MemAvailable (CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read MemAvailable from /proc/meminfo")


def auto_px_budget(
    generator: nn.Module,
    perf: PerfConfig | None,
    device: torch.device | str,
    max_scales: int = 3,
    aspect: float = 4 / 3,
    free_bytes: int | None = None,
    reference_px: int = 1_000_000,
) -> int:
    """The largest pixel budget whose estimated peak fits `FREE_FRACTION` of the free memory.

    The estimate is linear in the pixel count at a given aspect ratio, so two meta traces give
    its slope and intercept. On CPU the process itself is already resident: what is free now is
    compared with the estimate less the process.
    """
    device = torch.device(device)
    free = available_memory(device) if free_bytes is None else free_bytes
    if device.type == "cpu":
        free += CPU_PROCESS_BYTES + weight_bytes(generator)  # both already counted in MemAvailable's "used"

    def total(px: int) -> float:
        h = int(math.sqrt(px / aspect))
        return estimate_peak(generator, (h, int(h * aspect)), perf, device).total

    small, large = reference_px // 4, reference_px
    slope = (total(large) - total(small)) / (large - small)
    intercept = total(large) - slope * large
    budget = int((FREE_FRACTION * free - intercept) / slope)
    if budget < 256 * 256:
        raise MemoryError(
            f"pyramid.px_budget=auto: {free / 2**30:.1f} GiB free on {device} fits no useful budget "
            f"(estimated {slope:.0f} bytes per pixel)"
        )
    return budget // 10_000 * 10_000


__all__ = [
    "CPU_PROCESS_BYTES",
    "MemoryEstimate",
    "auto_px_budget",
    "available_memory",
    "estimate_peak",
    "checkpointed_saved",
    "meta_copy",
    "meta_trace",
    "trace_rear",
    "weight_bytes",
]
