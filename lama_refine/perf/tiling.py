"""Run the generator's full-resolution tail in horizontal bands (`perf.tile_rows`).

The tail banded here is a local chain: a stride-2 `ConvTranspose2d` (+ BatchNorm + ReLU) up to
full resolution, `ReflectionPad2d(P)`, a `(2P+1)`-wide `Conv2d` down to the image's channels and
an output activation (both LaMa generators end so). Where a generator's tail starts is the
generator protocol's answer (`GeneratorSpec.tail`, e.g. `find_tail`); a generator without one
keeps its tail whole. At full resolution it holds the largest tensors of an
iteration: 2-3 buffers of `ngf` channels (64 for big-lama: 0.23 GB each at 1152x768) in the
forward and again in the backward, whatever the backward keeps. `TiledTail` computes the output
band by band, keeps nothing for backward, and in backward recomputes one band at a time with
autograd to get the input's gradient: the full-resolution working set becomes one band's, for one
more forward of the tail per iteration. Every output pixel sees exactly the inputs it sees in the
whole-image computation (halo rows are included and cropped, the reflection at the image border
is taken at the border), and every sum runs inside one kernel call as in the whole-image
computation: on CPU (oneDNN, float32) the output and the input gradient are bit-identical to the
untiled tail's in our tests; other backends may round differently.

The transposed convs before the tail (big-lama's other upsamplings) run in bands too under the
lean backward (`banded_conv_transpose`, `banded_conv_transpose_grad`, used by
`lean.band_upsampling`): oneDNN holds about three output-sized buffers while it computes one,
which made big-lama's second upsampling the peak of an iteration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lama_refine.models.protocol import as_tuple, handler, is_empty, map_tensors, register_handler

_ACTS = (nn.Sigmoid, nn.Tanh, nn.Identity)


def _empty_as(like: Tensor, shape: tuple[int, ...]) -> Tensor:
    """An uninitialised tensor of `shape` in `like`'s dtype, device and layout (NCHW or NHWC)."""
    channels_last = (
        like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last)
    )
    return torch.empty(
        shape,
        dtype=like.dtype,
        device=like.device,
        memory_format=torch.channels_last if channels_last else torch.contiguous_format,
    )


def _padding(up: nn.ConvTranspose2d) -> tuple[int, ...]:
    """`up.padding`: torch types a conv's padding `str | tuple[int, ...]` for Conv2d's "same" /
    "valid"; a transposed conv takes no padding string, its padding is always the int tuple."""
    padding = up.padding
    assert not isinstance(padding, str), padding
    return padding


def up_size(up: nn.ConvTranspose2d, h: int) -> int:
    """Output rows of the transposed conv `up` on an input `h` rows high."""
    s, p, k, op = up.stride[0], _padding(up)[0], up.kernel_size[0], up.output_padding[0]
    return (h - 1) * s - 2 * p + up.dilation[0] * (k - 1) + 1 + op


def up_input_rows(up: nn.ConvTranspose2d, ya: int, yb: int, h: int) -> tuple[int, int]:
    """Input rows [ia, ib) whose transposed conv covers output rows [ya, yb) completely (plus a
    spare row); in the band's output, global row r is row r - ia * stride."""
    s, p, k = up.stride[0], _padding(up)[0], up.dilation[0] * (up.kernel_size[0] - 1) + 1
    ia = max(0, math.floor((ya + p - k + 1) / s))
    ib = min(h, math.floor((yb - 1 + p) / s) + 2)
    # oneDNN's transposed conv rounds a row the same way as in the whole image only when the
    # band has as many rows as the image modulo the stride (measured: bands of even length
    # are bit-identical on an even-height image, odd ones differ by ~1e-6): grow it by a row
    if (ib - ia) % s != h % s:
        if ib < h:
            ib += 1
        elif ia > 0:
            ia -= 1
    return ia, ib


def banded_conv_transpose(
    x: Tensor, up: nn.ConvTranspose2d, rows: int, weight: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """`up(x)` (with `weight` / `bias` in their place if given), computed `rows` output rows at a
    time into one output tensor. (B, C_in, h, w) -> (B, C_out, H, W), any float dtype.

    Why: on CPU, oneDNN's transposed conv holds about three output-sized buffers at once (its
    blocked result, the reorder to NCHW and a contiguous copy): 324 MiB for the 108 MiB output of
    big-lama's second upsampling at 1152x768, the peak of a whole refinement iteration. In bands,
    the output plus one band's buffers. Every output row is computed from the same input rows
    and columns as in the whole image, so on CPU the result is bit-identical in our tests."""
    weight = up.weight if weight is None else weight
    bias = up.bias if weight is up.weight else bias
    h, big_h = x.shape[-2], up_size(up, x.shape[-2])
    if up.stride[0] != up.stride[1] or big_h <= 2 * rows or torch.is_grad_enabled() and x.requires_grad:
        return F.conv_transpose2d(x, weight, bias, up.stride, _padding(up), up.output_padding, up.groups, up.dilation)
    out = None
    s = up.stride[0]
    for r0 in range(0, big_h, rows):
        r1 = min(big_h, r0 + rows)
        ia, ib = up_input_rows(up, r0, r1, h)
        y = F.conv_transpose2d(
            x[:, :, ia:ib], weight, bias, up.stride, _padding(up), up.output_padding, up.groups, up.dilation
        )
        if out is None:
            out = _empty_as(y, (*y.shape[:2], big_h, y.shape[-1]))
        out[:, :, r0:r1] = y[:, :, r0 - ia * s : r1 - ia * s]
    assert out is not None  # big_h > 2 * rows: the loop ran
    return out


def banded_conv_transpose_grad(
    grad: Tensor, up: nn.ConvTranspose2d, input_shape: torch.Size, rows: int, weight: Tensor | None = None
) -> Tensor:
    """The input gradient of `up` (a transposed conv, with `weight` in its place if given) from the
    output gradient `grad` (B, C_out, H, W), in bands of about `rows` gradient rows: (B, C_in, h, w).

    Why: as in the forward, oneDNN holds about three output-gradient-sized buffers at once; in bands
    the working set is one band's. Each input row's gradient is computed once, in a band whose
    output rows include every row it influences (the band's halo rows get partial gradients there
    and are dropped), so every sum runs inside one kernel call as in the whole image."""
    weight = up.weight if weight is None else weight
    s, p, reach = up.stride[0], _padding(up)[0], up.dilation[0] * (up.kernel_size[0] - 1)
    h, big_h = input_shape[-2], grad.shape[-2]

    def input_grad(g: Tensor, shape: tuple[int, ...]) -> Tensor:
        stand_in = g.new_empty(1).expand(shape)  # convolution_backward reads only the input's shape
        return torch.ops.aten.convolution_backward(
            g,
            stand_in,
            weight,
            None,
            up.stride,
            up.padding,
            up.dilation,
            True,
            up.output_padding,
            up.groups,
            (True, False, False),
        )[0]

    if up.stride[0] != up.stride[1] or big_h <= 2 * rows:
        return input_grad(grad, tuple(input_shape))
    grad_x = _empty_as(grad, (*grad.shape[:1], *input_shape[1:]))
    step = max(1, rows // s)
    for ja in range(0, h, step):
        jb = min(h, ja + step)
        r0, r1 = max(0, ja * s - p), min(big_h, (jb - 1) * s - p + reach + 1)  # the rows [ja, jb) reach
        ia, ib = up_input_rows(up, r0, r1, h)
        band_h = up_size(up, ib - ia)
        g = input_grad(grad[:, :, ia * s : ia * s + band_h], (*input_shape[:2], ib - ia, input_shape[-1]))
        grad_x[:, :, ja:jb] = g[:, :, ja - ia : jb - ia]
    return grad_x


class TiledTail(nn.Module):
    """[up (ConvTranspose2d) -> norm -> ReLU] -> ReflectionPad2d(P) -> conv (k = 2P+1) -> act,
    run in bands of `rows` output rows. Input (B, C, h, w), any float dtype; output (B, C_out, H, W)
    with H, W the transposed conv's output size."""

    def __init__(self, up: nn.ConvTranspose2d, norm: nn.Module, pad: int, conv: nn.Conv2d, act: nn.Module, rows: int):
        super().__init__()
        if rows < pad + 1:
            raise ValueError(f"perf.tile_rows must be > the tail's padding ({pad}), got {rows}")
        self.up, self.norm, self.conv, self.act = up, norm, conv, act
        self.pad, self.rows = pad, rows

    def up_size(self, h: int) -> int:
        return up_size(self.up, h)

    def input_rows(self, ya: int, yb: int, h: int) -> tuple[int, int]:
        return up_input_rows(self.up, ya, yb, h)

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
        # contiguous: eval BatchNorm takes another kernel (other rounding) on a strided view
        y = self.up(xb)[:, :, ya - ia * s : yb - ia * s].contiguous()
        y = torch.relu(self.norm(y))
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
        device_type = x.device.type
        ctx.autocast = (
            device_type,
            torch.is_autocast_enabled(device_type) if device_type in ("cpu", "cuda") else False,
            torch.get_autocast_dtype(device_type) if device_type in ("cpu", "cuda") else None,
        )
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
        # Bands of *input* rows: each input row's gradient is computed once, in one band whose
        # output rows include every row it influences, so every sum runs inside one kernel call
        # as in the whole-image backward (overlapping bands summed afterwards would round
        # differently). The input's halo rows get partial gradients there and are dropped.
        grad_x = torch.empty_like(x)  # every row is assigned below, once
        h = x.shape[-2]
        big_h = tail.up_size(h)
        s, k, p_up = tail.up.stride[0], tail.up.kernel_size[0], _padding(tail.up)[0]
        step = max(1, tail.rows // s)
        for ja in range(0, h, step):
            jb = min(h, ja + step)
            r0, r1 = max(0, s * ja - p_up - tail.pad - 1), min(big_h, s * jb + k + tail.pad + 1)
            ia, ib = tail.band_input(h, r0, r1)
            assert ia <= ja and ib >= jb, (ia, ja, jb, ib)
            with (
                torch.enable_grad(),
                torch.autocast(device_type, dtype=dtype, enabled=enabled)
                if device_type in ("cpu", "cuda")
                else nullcontext(),
            ):
                leaf = x[:, :, ia:ib].detach().requires_grad_(True)
                out = tail.band_from(leaf, ia, h, r0, r1)
                (g,) = torch.autograd.grad(out, leaf, grad[:, :, r0:r1].to(out.dtype))
            grad_x[:, :, ja:jb] = g[:, :, ja - ia : jb - ia]
        return grad_x, None


def is_bandable_tail(modules: Sequence[nn.Module]) -> bool:
    """Whether `modules` are exactly a tail `TiledTail` runs in bands: [ConvTranspose2d,
    BatchNorm2d|Identity, ReLU, ReflectionPad2d(P), Conv2d(2P+1, stride 1, no padding), optional
    activation (Sigmoid, Tanh, Identity)]."""
    if len(modules) not in (5, 6):
        return False
    up, norm, relu, pad, conv, *rest = modules
    return bool(
        isinstance(up, nn.ConvTranspose2d)
        and isinstance(norm, (nn.BatchNorm2d, nn.Identity))
        and isinstance(relu, nn.ReLU)
        and isinstance(pad, nn.ReflectionPad2d)
        and isinstance(conv, nn.Conv2d)
        and conv.padding == (0, 0)
        and conv.stride == (1, 1)
        and up.dilation == (1, 1)
        and up.groups == 1
        and len(set(pad.padding)) == 1
        and conv.kernel_size[0] == 2 * pad.padding[0] + 1
        and all(isinstance(m, _ACTS) for m in rest)
    )


def find_tail(modules: Sequence[nn.Module]) -> int | None:
    """Index where a bandable tail (`is_bandable_tail`) ends a stage's top-level modules, or None.
    A generator that ends so registers it as its tail: `register_generator(..., tail=find_tail)`."""
    for start in range(len(modules) - 5, -1, -1):
        if is_bandable_tail(modules[start:]):
            return start
    return None


def tile_tail(modules: list[nn.Module], rows: int, start: int | None = None) -> list[nn.Module]:
    """`modules` with its tail, from `start` (default: `find_tail`'s), replaced by a `TiledTail`
    (unchanged if there is no such tail)."""
    if start is None:
        start = find_tail(modules)
        if start is None:
            return modules
    if not is_bandable_tail(modules[start:]):
        names = [type(m).__name__ for m in modules[start:]]
        raise ValueError(
            f"the generator's tail from index {start} ({', '.join(names)}) is not one TiledTail can "
            "band: [ConvTranspose2d, BatchNorm2d|Identity, ReLU, ReflectionPad2d(P), Conv2d(2P+1), "
            "activation]; fix the generator's registered tail (register_generator(..., tail=...))"
        )
    up, norm, _relu, pad, conv, *rest = modules[start:]
    # is_bandable_tail checked the types
    assert isinstance(up, nn.ConvTranspose2d) and isinstance(pad, nn.ReflectionPad2d) and isinstance(conv, nn.Conv2d)
    act = rest[0] if rest else nn.Identity()
    return modules[:start] + [TiledTail(up, norm, pad.padding[0], conv, act, rows)]


# ---------------------------------------------------------------------------------------------
# The front (no gradients): a chain of local ops, run on overlapping bands of input rows
# ---------------------------------------------------------------------------------------------

_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Tanh, nn.Sigmoid)


def _conv_geometry(conv: nn.Conv2d) -> tuple[int, int] | None:
    """(stride, reach in input rows) of a conv, or None if it is not a plain square local conv (or
    its padding is a string, "same" / "valid": not understood here)."""
    if conv.stride[0] != conv.stride[1] or conv.groups < 1 or isinstance(conv.padding, str):
        return None
    reach = max(conv.padding[0], conv.dilation[0] * (conv.kernel_size[0] - 1) - conv.padding[0])
    return conv.stride[0], reach


def local_geometry(modules: list[nn.Module]) -> tuple[int, int] | None:
    """(total stride, receptive reach in input rows) of a chain of local ops, or None if any op is
    not local (e.g. a block with a Fourier branch) or not understood. A band edge's effect (its
    padding) reaches no further into the output than this. Besides torch's local ops, a module is
    understood where the generator protocol has its `local_convs`."""
    stride, reach = 1, 0
    for m in modules:
        if isinstance(m, _POINTWISE):
            continue
        if isinstance(m, (nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d)):
            reach += max(m.padding) * stride
            continue
        convs: list[nn.Conv2d] | None = None
        if isinstance(m, nn.Conv2d):
            convs = [m]
        elif (local_convs := handler("local_convs", m)) is not None:
            convs = local_convs(m)
        geometries: set[tuple[int, int]] = set()
        for c in convs or []:
            if (geometry := _conv_geometry(c)) is None:
                return None
            geometries.add(geometry)
        if not geometries or len({g[0] for g in geometries}) != 1:  # no convs, or strides differ
            return None
        reach += max(g[1] for g in geometries) * stride
        stride *= next(iter(geometries))[0]
    return stride, reach


class BandedFront(nn.Sequential):
    """The front's modules, run without gradients on bands of about `rows` input rows that overlap
    by the chain's receptive reach, the overlap cropped from the outputs: the front's
    full-resolution feature maps (64 channels at 1152x768 for big-lama: 0.23 GB each) exist one
    band at a time. Same module list (and length) as the plain front. With `global_head`, slot 0
    is `Sequential(image-wide op, local ops...)` (a generator's `input_fill`): the image-wide op
    runs on the whole input first, everything after it in bands."""

    def __init__(self, modules: list[nn.Module], rows: int, stride: int, reach: int, global_head: bool = False):
        super().__init__(*modules)
        self.stride = stride
        self.global_head = global_head
        self.halo = stride * (math.ceil(reach / stride) + 1)  # whole output rows, one spare
        self.rows = max(stride * max(1, rows // stride), 2 * self.halo)

    def _head(self) -> nn.Sequential:
        """Slot 0 with `global_head`: `Sequential(image-wide op, local ops...)` (`_has_global_head`)."""
        head = self[0]
        assert isinstance(head, nn.Sequential), type(head)
        return head

    def _local(self, x: Any) -> Any:
        """The front after its image-wide head (all of it without one)."""
        for i, module in enumerate(self):
            for m in list(self._head())[1:] if i == 0 and self.global_head else [module]:
                x = m(x)
        return x

    def forward(self, x: Any) -> Any:
        h = x.shape[-2] if torch.is_tensor(x) else 0
        if torch.is_grad_enabled() or h % self.stride or h <= self.rows + 2 * self.halo:
            return super().forward(x)
        if self.global_head:
            x = self._head()[0](x)
        bands = []
        for i0 in range(0, h, self.rows):
            i1 = min(h, i0 + self.rows)
            ia, ib = max(0, i0 - self.halo), min(h, i1 + self.halo)
            out = self._local(x[:, :, ia:ib])
            j0, j1 = (i0 - ia) // self.stride, (i1 - ia) // self.stride

            def crop(o: Tensor, j0: int = j0, j1: int = j1) -> Tensor:
                return o[:, :, j0:j1]

            bands.append(as_tuple(map_tensors(crop, out)))
        merged = tuple(
            parts[0] if is_empty(parts[0]) else torch.cat(parts, dim=-2) for parts in zip(*bands, strict=True)
        )
        return merged if isinstance(out, tuple) else merged[0]


def _has_global_head(modules: list[nn.Module]) -> bool:
    """Slot 0 is `Sequential(image-wide op, ...)` (an input fill, by the generator protocol's
    `image_wide`): an op the bands must not cut."""
    first = modules[0] if modules else None
    if not isinstance(first, nn.Sequential) or len(first) == 0:
        return False
    image_wide = handler("image_wide", first[0])
    return image_wide is not None and bool(image_wide(first[0]))


def band_front(front: nn.Sequential, rows: int) -> nn.Module:
    """The front as a `BandedFront`, or unchanged where it is not a chain of local ops (after an
    input fill, which runs on the whole image)."""
    modules = list(front)
    head = _has_global_head(modules)
    chain = modules
    if head:
        first = cast(nn.Sequential, modules[0])  # _has_global_head checked it
        chain = list(first)[1:] + modules[1:]
    geometry = local_geometry(chain)
    if geometry is None:
        return front
    return BandedFront(modules, rows, *geometry, global_head=head)


# The banded tail is lean already: its autograd Function keeps only its input and recomputes one
# band at a time in backward (the lean backward takes it as it is, without an INFO line).
register_handler("lean", TiledTail, lambda module: module)

__all__ = [
    "BandedFront",
    "TiledTail",
    "band_front",
    "banded_conv_transpose",
    "banded_conv_transpose_grad",
    "find_tail",
    "is_bandable_tail",
    "local_geometry",
    "tile_tail",
    "up_input_rows",
    "up_size",
]
