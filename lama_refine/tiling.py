"""Run the generator's full-resolution tail in horizontal bands (`perf.tile_rows`).

Both LaMa generators end with the same local tail: a stride-2 `ConvTranspose2d` (+ BatchNorm +
ReLU) up to full resolution, `ReflectionPad2d(P)`, a `(2P+1)`-wide `Conv2d` down to the image's
channels and an output activation. At full resolution it holds the largest tensors of an
iteration: 2-3 buffers of `ngf` channels (64 for big-lama: 0.23 GB each at 1152x768) in the
forward and again in the backward, whatever the backward keeps. `TiledTail` computes the output
band by band, keeps nothing for backward, and in backward recomputes one band at a time with
autograd to get the input's gradient: the full-resolution working set becomes one band's, for one
more forward of the tail per iteration. Every output pixel sees exactly the inputs it sees in the
whole-image computation (halo rows are included and cropped, the reflection at the image border
is taken at the border); values agree to float rounding (other kernel shapes), not bit for bit.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ACTS = (nn.Sigmoid, nn.Tanh, nn.Identity)


class TiledTail(nn.Module):
    """[up (ConvTranspose2d) -> norm -> ReLU] -> ReflectionPad2d(P) -> conv (k = 2P+1) -> act,
    run in bands of `rows` output rows. Input (B, C, h, w), any float dtype; output (B, C_out, H, W)
    with H, W the transposed conv's output size."""

    def __init__(self, up: nn.ConvTranspose2d, norm: nn.Module, relu: bool, pad: int, conv: nn.Conv2d,
                 act: nn.Module, rows: int):
        super().__init__()
        if rows < pad + 1:
            raise ValueError(f"perf.tile_rows must be > the tail's padding ({pad}), got {rows}")
        self.up, self.norm, self.conv, self.act = up, norm, conv, act
        self.relu, self.pad, self.rows = relu, pad, rows

    def up_size(self, h: int) -> int:
        s, p, k, op = self.up.stride[0], self.up.padding[0], self.up.kernel_size[0], self.up.output_padding[0]
        return (h - 1) * s - 2 * p + k + op

    def input_rows(self, ya: int, yb: int, h: int) -> tuple[int, int]:
        """Input rows whose transposed conv covers output rows [ya, yb) completely (plus a spare row)."""
        s, p, k = self.up.stride[0], self.up.padding[0], self.up.kernel_size[0]
        return max(0, math.floor((ya + p - k + 1) / s)), min(h, math.floor((yb - 1 + p) / s) + 2)

    def band(self, x: Tensor, r0: int, r1: int) -> Tensor:
        """Output rows [r0, r1) from `x`, the whole input."""
        ia, ib = self.band_input(x.shape[-2], r0, r1)
        return self.band_from(x[:, :, ia:ib], ia, x.shape[-2], r0, r1)

    def band_input(self, h: int, r0: int, r1: int) -> tuple[int, int]:
        """The input rows [ia, ib) that output rows [r0, r1) depend on (plus a spare row)."""
        big_h, p = self.up_size(h), self.pad
        return self.input_rows(max(0, r0 - p), min(big_h, r1 + p), h)

    def band_from(self, xb: Tensor, ia: int, h: int, r0: int, r1: int) -> Tensor:
        """Output rows [r0, r1) from input rows [ia, ia + len(xb)) of an input `h` rows high."""
        big_h, p, s = self.up_size(h), self.pad, self.up.stride[0]
        ya, yb = max(0, r0 - p), min(big_h, r1 + p)
        y = self.up(xb)[:, :, ya - ia * s: yb - ia * s]
        y = self.norm(y)
        if self.relu:
            y = torch.relu(y)
        # reflection at the image's top / bottom border only: inside, the halo rows are real rows
        y = F.pad(y, (p, p, max(0, p - r0), max(0, r1 + p - big_h)), mode="reflect")
        return self.act(self.conv(y))

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _TiledTailFunction.apply(x, self)
        return self.run(x)

    def run(self, x: Tensor) -> Tensor:
        big_h = self.up_size(x.shape[-2])
        bands = [self.band(x, r0, min(big_h, r0 + self.rows)) for r0 in range(0, big_h, self.rows)]
        return torch.cat(bands, dim=-2)


class _TiledTailFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, tail: TiledTail) -> Tensor:
        ctx.tail = tail
        ctx.x_shape, ctx.x_dtype, ctx.x_device = x.shape, x.dtype, x.device
        device_type = x.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type) if device_type in ("cpu", "cuda") else False,
                        torch.get_autocast_dtype(device_type) if device_type in ("cpu", "cuda") else None)
        ctx.save_for_backward(x)  # the input is resident anyway (the previous stage's output)
        with torch.no_grad():
            return tail.run(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        (x,) = ctx.saved_tensors
        tail: TiledTail = ctx.tail
        device_type, enabled, dtype = ctx.autocast
        grad_x = torch.zeros_like(x)
        h = x.shape[-2]
        big_h = tail.up_size(h)
        for r0 in range(0, big_h, tail.rows):
            r1 = min(big_h, r0 + tail.rows)
            ia, ib = tail.band_input(h, r0, r1)
            with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled) \
                    if device_type in ("cpu", "cuda") else _null():
                leaf = x[:, :, ia:ib].detach().requires_grad_(True)
                out = tail.band_from(leaf, ia, h, r0, r1)
                (g,) = torch.autograd.grad(out, leaf, grad[:, :, r0:r1].to(out.dtype))
            grad_x[:, :, ia:ib] += g.to(grad_x.dtype)
        return grad_x, None


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: Any) -> None:
        return None


def find_tail(modules: list[nn.Module]) -> int | None:
    """Index where the tiled tail starts in a stage's top-level modules, or None if it does not end
    with [ConvTranspose2d, BatchNorm2d|Identity, ReLU, ReflectionPad2d, Conv2d, activation]."""
    for start in range(len(modules) - 5, -1, -1):
        up, norm, relu, pad, conv, *rest = modules[start:]
        if (isinstance(up, nn.ConvTranspose2d) and isinstance(norm, (nn.BatchNorm2d, nn.Identity))
                and isinstance(relu, nn.ReLU) and isinstance(pad, nn.ReflectionPad2d)
                and isinstance(conv, nn.Conv2d) and conv.padding == (0, 0) and conv.stride == (1, 1)
                and up.dilation == (1, 1) and up.groups == 1 and len(set(pad.padding)) == 1
                and conv.kernel_size[0] == 2 * pad.padding[0] + 1 and len(rest) <= 1
                and all(isinstance(m, _ACTS) for m in rest)):
            return start
    return None


def tile_tail(modules: list[nn.Module], rows: int) -> list[nn.Module]:
    """`modules` with its tail replaced by a `TiledTail` (unchanged if there is no such tail)."""
    start = find_tail(modules)
    if start is None:
        return modules
    up, norm, _relu, pad, conv, *rest = modules[start:]
    act = rest[0] if rest else nn.Identity()
    return modules[:start] + [TiledTail(up, norm, True, pad.padding[0], conv, act, rows)]


__all__ = ["TiledTail", "find_tail", "tile_tail"]
