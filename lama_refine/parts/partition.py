"""Splitting the generator into a frozen front and differentiated rear stages over devices.

Where to cut is the generator protocol's answer (`models/protocol.py`): its layers, cut at the
first trunk block.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lama_refine.models.protocol import (
    Features,
    GeneratorSpec,
    as_tuple,
    layers,
    map_tensors,
    probe_input,
    spec_of,
    trunk_bounds,
)


def move_features(features: Features, device: torch.device) -> Features:
    """Move each tensor of the front's output to `device` (empty branches stay as they are)."""
    return map_tensors(lambda t: t.to(device), features)


@dataclass
class Stage:
    """A run of consecutive top-level modules on one device."""

    module: nn.Sequential
    device: torch.device

    def __call__(self, features: Features) -> Features:
        return self.module(move_features(features, self.device))


@dataclass
class Partition:
    """The generator cut at its first trunk block: `front` (no gradients) and `rear` stages.

    `spec`: the generator's protocol answers (`models.protocol.GeneratorSpec`: its input, the names
    of its front's features, its tail), set by `split_by_block_counts`; a partition built without
    one gets its generator's from the `Inpainter` (`spec_of`)."""

    front: Stage
    rear: list[Stage]
    spec: GeneratorSpec | None = None

    def run_rear(self, features: Features) -> Tensor:
        """Features from the front -> generator output (1, 3, H, W) on the last stage's device."""
        for stage in self.rear:
            features = stage(features)
        return features

    @property
    def output_device(self) -> torch.device:
        return self.rear[-1].device

    @property
    def rear_indices(self) -> list[list[int]]:
        """Top-level module indices per rear stage (for logs and tests)."""
        start = len(self.front.module)
        indices = []
        for stage in self.rear:
            indices.append(list(range(start, start + len(stage.module))))
            start += len(stage.module)
        return indices


class DevicePartitioner(ABC):
    """Decides which rear blocks run on which device."""

    @abstractmethod
    def split(self, generator: nn.Module, devices: Sequence[torch.device]) -> Partition:
        """generator (its layers: `models.protocol.layers`), devices (>= 1) -> Partition.

        The front runs on devices[0]; rear stage i on devices[i]; the stages together hold every
        module from the first trunk block to the end, in order. Modules are moved in place.
        """


def split_by_block_counts(generator: nn.Module, devices: Sequence[torch.device], counts: Sequence[int]) -> Partition:
    """Rear stage i gets `counts[i]` resnet blocks for every device but the last, which takes
    the remaining blocks and the whole tail (decoder)."""
    if len(counts) != len(devices) - 1:
        raise ValueError(f"need {len(devices) - 1} block counts for {len(devices)} devices, got {list(counts)}")
    first, _ = trunk_bounds(generator)
    model = layers(generator)
    front = Stage(_slice(model, 0, first).to(devices[0]), devices[0])
    rear, start = [], first
    for count, device in zip(counts, devices[:-1], strict=True):
        rear.append(Stage(_slice(model, start, start + count).to(device), device))
        start += count
    rear.append(Stage(_slice(model, start, len(model)).to(devices[-1]), devices[-1]))
    return Partition(front, rear, spec_of(generator))


def _slice(model: nn.Sequential, start: int, stop: int) -> nn.Sequential:
    """model[start:stop] as a plain `nn.Sequential` with the same module names (slicing a
    subclass of nn.Sequential would call the subclass's own constructor)."""
    return nn.Sequential(OrderedDict(list(model._modules.items())[start:stop]))  # keeps shared modules twice


class EvenPartitioner(DevicePartitioner):
    """The original split: `n_blocks // n_devices` blocks per device; the last device takes the
    remainder plus the decoder, so it holds the most memory."""

    def split(self, generator: nn.Module, devices: Sequence[torch.device]) -> Partition:
        _, n_blocks = trunk_bounds(generator)
        per_device = n_blocks // len(devices)
        return split_by_block_counts(generator, devices, [per_device] * (len(devices) - 1))


class SinglePartitioner(DevicePartitioner):
    """Everything on the first device: one rear stage with all blocks and the decoder. Other
    devices named in the config are left unused."""

    def split(self, generator: nn.Module, devices: Sequence[torch.device]) -> Partition:
        return split_by_block_counts(generator, devices[:1], [])


class ExplicitPartitioner(DevicePartitioner):
    """`blocks[i]` resnet blocks on device i, one count per device, summing to the number of
    blocks; the last device also takes the decoder. E.g. `[12, 6]` for big-lama on two GPUs."""

    def __init__(self, blocks: Sequence[int]):
        self.blocks = [int(b) for b in blocks]
        if any(b < 0 for b in self.blocks):
            raise ValueError(f"block counts must be >= 0, got {self.blocks}")

    def split(self, generator: nn.Module, devices: Sequence[torch.device]) -> Partition:
        _, n_blocks = trunk_bounds(generator)
        if len(self.blocks) != len(devices) or sum(self.blocks) != n_blocks:
            raise ValueError(
                f"partitioner.blocks={self.blocks} must give one count per device ({len(devices)}) "
                f"summing to the generator's {n_blocks} resnet blocks"
            )
        return split_by_block_counts(generator, devices, self.blocks[:-1])


# (generator) -> estimated memory cost of each rear top-level module (first trunk block .. end), any unit.
ModuleCosts = Callable[[nn.Module], Sequence[float]]


class SavedBytes:
    """Adds up the bytes autograd keeps for backward, as a `saved_tensors_hooks` pack function:
    each storage once, parameters and the given `weights` (a model's parameters and buffers) left
    out. On the `meta` device storages cannot be told apart (every data pointer is 0), so every
    saved tensor counts there. The one counter behind `saved_activation_bytes` (the balanced split)
    and `memory.trace_rear` (the peak estimate)."""

    def __init__(self, weights: Iterable[Tensor] = ()):
        weights = list(weights)
        self._weight_ids = {id(w) for w in weights}
        self._seen = {w.untyped_storage().data_ptr() for w in weights} - {0}
        self.bytes = 0

    def pack(self, t: Tensor) -> Tensor:
        if isinstance(t, nn.Parameter) or id(t) in self._weight_ids:
            return t
        ptr = t.untyped_storage().data_ptr()
        if ptr == 0 or ptr not in self._seen:
            self._seen.add(ptr)
            self.bytes += t.numel() * t.element_size()
        return t

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        """The context in which what autograd saves is counted."""
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def saved_activation_bytes(generator: nn.Module, probe_size: int = 64) -> list[float]:
    """Estimated activation memory of each rear module during refinement, in bytes per input pixel.

    The estimate: run the front, then the rear module by module on a `probe_size` square of zeros
    with the front's features requiring gradients (as the refiner does), and add up the bytes of
    every tensor autograd saves for the backward pass (`SavedBytes`: each storage once, parameters
    and buffers excluded); divide by the probe's pixel count. Activations grow
    linearly with the pixel count, so the per-pixel figure carries over to the real size. It leaves
    out the weights (equal per resnet block), the optimiser's state (on the first rear device, the
    size of the front's features) and transient buffers freed inside a module's forward. On the
    `meta` device it runs without memory and counts every saved tensor (storages cannot be told apart).
    """
    first, _ = trunk_bounds(generator)
    model = layers(generator)
    saved = SavedBytes(list(generator.parameters()) + list(generator.buffers()))
    was_training = generator.training
    generator.eval()  # never touch BatchNorm running statistics
    costs: list[float] = []

    try:
        with torch.no_grad():
            features = _slice(model, 0, first)(probe_input(generator, (probe_size, probe_size)))
        features = map_tensors(lambda f: f.detach().requires_grad_(True), features)
        with torch.enable_grad(), saved.hooks():
            for module in list(model)[first:]:
                before = saved.bytes
                features = module(features)
                costs.append((saved.bytes - before) / probe_size**2)
    finally:
        generator.train(was_training)
    return costs


def balanced_block_counts(block_costs: Sequence[float], tail_cost: float, n_devices: int) -> list[int]:
    """Contiguous split of the blocks over `n_devices` (the last one also carries `tail_cost`)
    minimising the largest per-device cost; ties keep more blocks on earlier devices.
    Returns one block count per device."""
    n = len(block_costs)
    prefix = [0.0]
    for c in block_costs:
        prefix.append(prefix[-1] + c)

    # best[d][i]: the smallest max load placing blocks[i:] on the last d devices;
    # choice[d][i]: blocks on the first of them.
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(n_devices + 1)]
    choice = [[0] * (n + 1) for _ in range(n_devices + 1)]
    for i in range(n + 1):
        best[1][i] = prefix[n] - prefix[i] + tail_cost
        choice[1][i] = n - i
    for d in range(2, n_devices + 1):
        for i in range(n + 1):
            for k in range(n - i, -1, -1):  # most blocks first, so ties go to earlier devices
                load = max(prefix[i + k] - prefix[i], best[d - 1][i + k])
                if load < best[d][i]:
                    best[d][i], choice[d][i] = load, k
    counts, i = [], 0
    for d in range(n_devices, 0, -1):
        counts.append(choice[d][i])
        i += choice[d][i]
    return counts


class BalancedPartitioner(DevicePartitioner):
    """Splits the blocks so each device's estimated activation memory is as even as it can be,
    counting the decoder on the last device (the original's even split overloads it: at full
    resolution the decoder keeps more activations than several resnet blocks).

    `estimate(generator)` gives each rear module's cost (default: `saved_activation_bytes`, a probe
    forward; replace it with any `ModuleCosts`, e.g. from config with `_partial_: true`).
    """

    def __init__(self, estimate: ModuleCosts | None = None):
        self.estimate = estimate or saved_activation_bytes

    def split(self, generator: nn.Module, devices: Sequence[torch.device]) -> Partition:
        _, n_blocks = trunk_bounds(generator)
        costs = list(self.estimate(generator))
        counts = balanced_block_counts(costs[:n_blocks], sum(costs[n_blocks:]), len(devices))
        return split_by_block_counts(generator, devices, counts[:-1])


__all__ = [
    "BalancedPartitioner",
    "DevicePartitioner",
    "EvenPartitioner",
    "ExplicitPartitioner",
    "ModuleCosts",
    "as_tuple",
    "Partition",
    "SavedBytes",
    "SinglePartitioner",
    "Stage",
    "balanced_block_counts",
    "move_features",
    "saved_activation_bytes",
    "split_by_block_counts",
    "trunk_bounds",
]
