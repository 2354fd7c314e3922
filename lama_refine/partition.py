"""Splitting the generator into a frozen front and differentiated rear stages over devices (SPEC 4.1)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .models import is_resnet_block

Features = Any  # a tensor or a tuple of tensors (FFC: (local, global)); ints stand for empty branches


def move_features(features: Features, device: torch.device) -> Features:
    """Move a tensor, or each tensor of a tuple, to `device`; leave non-tensors alone."""
    if isinstance(features, tuple):
        return tuple(move_features(f, device) for f in features)
    return features.to(device) if torch.is_tensor(features) else features


@dataclass
class Stage:
    """A run of consecutive top-level modules on one device."""

    module: nn.Sequential
    device: torch.device

    def __call__(self, features: Features) -> Features:
        return self.module(move_features(features, self.device))


@dataclass
class Partition:
    """The generator cut at its first resnet block: `front` (no gradients) and `rear` stages."""

    front: Stage
    rear: list[Stage]

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
        """generator (with a top-level `model` nn.Sequential), devices (>= 1) -> Partition.

        The front runs on devices[0]; rear stage i on devices[i]; the stages together hold every
        module from the first resnet block to the end, in order. Modules are moved in place.
        """


def trunk_bounds(generator: nn.Module) -> tuple[int, int]:
    """(index of the first resnet block, number of resnet blocks) in `generator.model`."""
    first, n_blocks, found = 0, 0, False
    for module in generator.model:
        if is_resnet_block(module):
            n_blocks += 1
            found = True
        elif not found:
            first += 1
    if not found:
        raise ValueError(f"{type(generator).__name__} has no resnet blocks to split at")
    return first, n_blocks


def split_by_block_counts(generator: nn.Module, devices: Sequence[torch.device],
                          counts: Sequence[int]) -> Partition:
    """Rear stage i gets `counts[i]` resnet blocks for every device but the last, which takes
    the remaining blocks and the whole tail (decoder)."""
    if len(counts) != len(devices) - 1:
        raise ValueError(f"need {len(devices) - 1} block counts for {len(devices)} devices, got {list(counts)}")
    first, _ = trunk_bounds(generator)
    model = generator.model
    front = Stage(model[:first].to(devices[0]), devices[0])
    rear, start = [], first
    for count, device in zip(counts, devices[:-1]):
        rear.append(Stage(model[start:start + count].to(device), device))
        start += count
    rear.append(Stage(model[start:].to(devices[-1]), devices[-1]))
    return Partition(front, rear)


class EvenPartitioner(DevicePartitioner):
    """The original split: `n_blocks // n_devices` blocks per device; the last device takes the
    remainder plus the decoder, so it holds the most memory."""

    def split(self, generator: nn.Module, devices: Sequence[torch.device]) -> Partition:
        _, n_blocks = trunk_bounds(generator)
        per_device = n_blocks // len(devices)
        return split_by_block_counts(generator, devices, [per_device] * (len(devices) - 1))


__all__ = [
    "DevicePartitioner",
    "EvenPartitioner",
    "Partition",
    "Stage",
    "move_features",
    "split_by_block_counts",
    "trunk_bounds",
]
