"""Performance switches for the refined rear: lean backward, mixed precision, layout, compile,
checkpointing, threads (config section `perf:`).

`lean_backward` is numerically neutral and on by default; the others change speed (and, for
`amp`, the numbers) and are off by default. All of them act on the rear stages of a `Partition`
and leave the generator's own module tree (used by plain inference) as it is, except
`channels_last`, which converts the rear's weights in place (values unchanged).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lama_refine.models.protocol import Features, GeneratorSpec, is_block, map_tensors, tail_start
from lama_refine.parts.partition import Partition, Stage
from lama_refine.perf import allocator as allocators
from lama_refine.perf.lean import band_upsampling, lean_rear
from lama_refine.perf.tiling import band_front, tile_tail

log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@dataclass
class PerfConfig:
    """The `perf:` config section."""

    lean_backward: bool = True  # custom autograd functions that keep only what input-gradients need
    amp: str | None = None  # bf16 | fp16: autocast the rear (FFT stays float32)
    channels_last: bool = False  # NHWC weights and features in the rear
    compile: bool = False  # torch.compile each rear stage
    checkpointing: bool = False  # recompute each resnet block in backward instead of keeping its activations
    threads: int | None = None  # torch.set_num_threads for CPU work; null: torch's default
    mmap_threshold_kb: int | None = None  # glibc: mmap (return on free) allocations above this; null: glibc's
    allocator: str | None = "auto"  # auto (tcmalloc where installed) | glibc | jemalloc | tcmalloc | a .so path:
    # preloaded by the CLI (lama_refine.perf.allocator)
    malloc_trim: bool = True  # glibc: malloc_trim(0) after each optimiser step (hands freed heap pages back)
    # run the full-resolution front and tail in bands of this many rows (lama_refine.perf.tiling); None: whole
    tile_rows: int | None = 32
    # with tile_rows: the tail and the upsampling convs too (the front alone is bit-identical on
    # CPU; the tail to rounding)
    tile_tail: bool = True

    def __post_init__(self) -> None:
        if self.amp in ("", "none", "null", "fp32", "float32"):
            self.amp = None
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"perf.amp={self.amp!r}: expected one of bf16, fp16 or null")
        if self.amp is not None and not self.lean_backward:
            # LaMa's FourierUnit calls torch.complex on autocast's bf16/fp16 output, which has no
            # kernel; the lean Fourier unit runs its FFT path in float32.
            raise ValueError("perf.amp needs perf.lean_backward=true (LaMa's Fourier unit has no half-precision path)")
        self.allocator = allocators.normalise(self.allocator)
        if self.tile_rows is not None and self.tile_rows < 8:
            raise ValueError(f"perf.tile_rows must be >= 8 or null, got {self.tile_rows}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"perf.threads must be >= 1 or null, got {self.threads}")

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.amp] if self.amp else None

    @classmethod
    def from_config(cls, cfg: Any) -> PerfConfig:
        """From a `perf:` DictConfig / mapping (missing keys take the defaults)."""
        if cfg is None:
            return cls()
        return cls(**{k: v for k, v in dict(cfg).items()})


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def set_mmap_threshold(n_bytes: int) -> bool:
    """glibc: serve allocations above `n_bytes` with mmap, which returns them to the system on free.

    glibc's default threshold adapts upwards to the largest block freed (up to 32 MiB), after which
    feature-map-sized buffers come from the heap and their memory stays resident after free: the
    lean backward's peak RSS at 736x736 is 2.3-2.5 GiB with the default and 1.1 GiB with a fixed
    128 KiB threshold, but every fresh mapping is page-faulted in again, which made iterations
    1.6x slower (docs/benchmarks.md): a memory switch, off by default. Returns False where there
    is no glibc (the setting is then a no-op).
    """
    libc = allocators.libc()
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(n_bytes))) if libc is not None else False


def step_hook(perf: PerfConfig) -> Callable[[], object] | None:
    """What the refiner calls after each optimiser step (the pipeline chains it into the
    `RefineHooks.after_step` it passes): with `perf.malloc_trim`, glibc's `malloc_trim(0)`, which
    hands the heap's free pages back to the system; None when off or where glibc's malloc does
    not serve this process (another allocator is preloaded, or no glibc): the switch is then a
    no-op. Numbers are unchanged either way."""
    if not perf.malloc_trim:
        return None
    if not allocators.on_glibc_malloc(perf.allocator):
        log.debug("perf.malloc_trim: glibc's malloc is not this process's allocator; nothing to trim")
        return None
    return allocators.malloc_trim


def release_memory() -> None:
    """Give back what dead objects held: Python garbage first (tensors kept alive by reference
    cycles, e.g. a failed try's frames), then glibc's free heap pages (`malloc_trim`, a no-op
    without glibc) and CUDA's cached blocks. Used after an out-of-memory error (the batch's
    retries) and before a memory baseline (lama-refine-eval's peak readings)."""
    gc.collect()
    allocators.malloc_trim()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def apply_process_settings(perf: PerfConfig) -> None:
    """The process-wide switches: CPU threads, the allocator and glibc's mmap threshold."""
    allocators.check(perf.allocator)
    if perf.threads is not None:
        torch.set_num_threads(perf.threads)
    if perf.mmap_threshold_kb is not None and not set_mmap_threshold(perf.mmap_threshold_kb * 1024):
        log.debug("perf.mmap_threshold_kb: no glibc mallopt here; left as is")


def _to_layout(features: Features, channels_last: bool) -> Features:
    if not channels_last:
        return features
    return map_tensors(lambda f: f.contiguous(memory_format=torch.channels_last) if f.dim() == 4 else f, features)


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None or device.type not in ("cpu", "cuda"):
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


class Checkpointed(nn.Module):
    """Recompute `module` in backward (non-reentrant activation checkpointing)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.module(x)
        return checkpoint(self.module, x, use_reentrant=False)


class RearStage(nn.Sequential):
    """A rear stage's modules, run under the switches: features to the chosen layout, autocast,
    and, on the last stage, the output back to float32 so the loss is computed in float32."""

    def __init__(
        self,
        modules: list[nn.Module],
        device: torch.device,
        amp_dtype: torch.dtype | None,
        channels_last: bool,
        float_output: bool,
        compile: bool,
    ):
        super().__init__(*modules)
        self.device = device
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.float_output = float_output
        # dynamic=False: one graph per size (a few per photo); inductor fails on the symbolic
        # shapes of the FFT path with dynamic shapes.
        self._run = torch.compile(super().forward, dynamic=False) if compile else super().forward

    def forward(self, features: Features) -> Features:
        features = _to_layout(features, self.channels_last)
        with _autocast(self.device, self.amp_dtype):
            out = self._run(features)
        if self.float_output and torch.is_tensor(out) and out.dtype != torch.float32:
            out = out.float()
        return out


def tune_stage(stage: Stage, perf: PerfConfig, last: bool, spec: GeneratorSpec | None = None) -> Stage:
    """One rear stage with the switches of `perf` applied; `spec`: the generator's protocol answers
    (where its tail to band starts: `GeneratorSpec.tail`; None: the default generator's, no tail)."""
    modules: list[nn.Module] = list(stage.module)
    if perf.tile_rows and perf.tile_tail and last:
        start = tail_start(spec if spec is not None else GeneratorSpec(), modules)
        if start is not None:
            modules = tile_tail(modules, perf.tile_rows, start)
    if perf.lean_backward:
        modules = list(lean_rear(nn.Sequential(*modules)))
        if perf.tile_rows and perf.tile_tail:
            band_upsampling(nn.Sequential(*modules), perf.tile_rows)
    if perf.checkpointing:
        modules = [Checkpointed(m) if is_block(m) else m for m in modules]
    if perf.channels_last:
        for m in modules:
            m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
    module = RearStage(
        modules, stage.device, perf.amp_dtype, perf.channels_last, float_output=last, compile=perf.compile
    )
    return Stage(module, stage.device)


def tune_partition(partition: Partition, perf: PerfConfig) -> Partition:
    """The partition with every rear stage tuned; the front (it runs once per scale without
    gradients) only changes with `tile_rows`, which runs it in bands."""
    n = len(partition.rear)
    rear = [tune_stage(stage, perf, last=i == n - 1, spec=partition.spec) for i, stage in enumerate(partition.rear)]
    front = partition.front
    if perf.tile_rows:  # the front's full-resolution maps, one band at a time (no gradients there)
        # only rear stages are iterated as Sequentials; the banded front is a plain module
        front = Stage(band_front(front.module, perf.tile_rows), front.device)  # type: ignore[arg-type]
    return Partition(front, rear, partition.spec)


__all__ = [
    "AMP_DTYPES",
    "Checkpointed",
    "PerfConfig",
    "RearStage",
    "apply_process_settings",
    "release_memory",
    "set_mmap_threshold",
    "step_hook",
    "tune_partition",
    "tune_stage",
]
