"""Padding to a multiple of the network's stride, bottom and right only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ceil_to_multiple(x: int, modulo: int) -> int:
    return -(-x // modulo) * modulo


def pad_reflect(x: Tensor, modulo: int) -> Tensor:
    """(B, C, H, W) -> (B, C, H', W'), H' and W' the next multiples of `modulo`; torch `reflect`
    (edge not repeated: ..., a, b, c | b, a). What the original refiner does at every scale.

    Reflection needs more pixels than it pads: a side shorter than its padding + 1 is an error.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = ceil_to_multiple(h, modulo) - h, ceil_to_multiple(w, modulo) - w
    if pad_h >= h or pad_w >= w:
        raise ValueError(
            f"a {h}x{w} image is too small to reflect-pad to a multiple of {modulo}: "
            f"each side needs more than {max(pad_h, pad_w)} pixels"
        )
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")


def symmetric_indices(n: int, n_out: int, device: torch.device | None = None) -> Tensor:
    """Indices of numpy's `symmetric` padding (edge repeated: ..., b, c | c, b, ...), any length."""
    i = torch.arange(n_out, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def pad_symmetric(x: Tensor, modulo: int) -> Tensor:
    """(B, C, H, W) -> next multiples of `modulo` with numpy `symmetric` padding at the bottom and
    right: what LaMa's data loader does before plain inference."""
    h, w = x.shape[-2:]
    h_out, w_out = ceil_to_multiple(h, modulo), ceil_to_multiple(w, modulo)
    if (h_out, w_out) == (h, w):
        return x
    x = x.index_select(-2, symmetric_indices(h, h_out, x.device))
    return x.index_select(-1, symmetric_indices(w, w_out, x.device))
