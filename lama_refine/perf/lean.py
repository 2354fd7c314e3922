"""A lean backward for the frozen rear: the same numbers as autograd, a fraction of its memory.

Refinement differentiates the rear with respect to its *input features* only; the weights are
frozen. Plain autograd still keeps every conv's and every norm's input alive until backward
(about ten float tensors per block of big-lama), although an input-gradient needs much less:

- a convolution (and its reflect padding) needs only its weight, which is alive anyway;
- eval-mode BatchNorm is a per-channel affine map: it needs only its scale;
- ReLU needs only the sign of its output: one bit per element (stored bit-packed);
- the FFT, stacking, permuting, concatenating and adding need nothing at all.

`lean_rear(module)` rewrites a rear stage into modules built from three custom autograd
functions (`FrozenConv`, `FrozenNormAct` and the bit-packed ReLU mask they share) that save
exactly that. The forward runs the original modules' own ops, so outputs are bit-identical;
backward calls the kernels autograd would call (`convolution_backward`, the padding's backward),
so gradients agree with autograd's to float rounding. Modules it does not know (or knows but
cannot make lean, e.g. gated blocks, training-mode norms) are kept as they are and go through
plain autograd, so any generator stays correct (one INFO line names the generator-specific module
classes left so). This module holds the generic machinery and torch's own modules; which
generator-specific module gets which lean version is asked of the generator protocol
(`models.protocol.handler("lean", module)`), where each generator registers its blocks' (LaMa's:
`models/lama/lean_blocks.py`, registered in `models/kinds.py`). The new modules share the
original parameters; the original module tree is not modified.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, TypeGuard, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lama_refine.models.protocol import handler, is_empty
from lama_refine.perf.tiling import banded_conv_transpose, banded_conv_transpose_grad

log = logging.getLogger(__name__)

_BIT_WEIGHTS: dict[torch.device, Tensor] = {}


# ---------------------------------------------------------------------------------------------
# Bit-packed ReLU masks
# ---------------------------------------------------------------------------------------------


def _bit_weights(device: torch.device) -> Tensor:
    if device not in _BIT_WEIGHTS:
        _BIT_WEIGHTS[device] = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=device)
    return _BIT_WEIGHTS[device]


def pack_mask(mask: Tensor) -> Tensor:
    """bool tensor of n elements -> uint8 tensor of ceil(n / 8) elements (8 flags a byte, in the
    tensor's logical order, whatever its memory layout)."""
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = F.pad(flat.view(torch.uint8), (0, pad)).view(torch.bool)
    return (flat.view(-1, 8).view(torch.uint8) * _bit_weights(mask.device)).sum(-1, dtype=torch.uint8)


def unpack_mask(packed: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of `pack_mask`: the bool tensor of `shape` (contiguous)."""
    n = 1
    for s in shape:
        n *= s
    bits = packed.unsqueeze(-1).bitwise_and(_bit_weights(packed.device)).ne(0)
    return bits.view(-1)[:n].view(shape)


PACK_CHUNK = 1 << 22  # elements packed or unpacked per step: the bool / byte temporaries stay at 4-8 MiB


def pack_positive(y: Tensor) -> Tensor:
    """`pack_mask(y > 0)` without the y-sized bool and byte temporaries: `PACK_CHUNK` elements
    at a time (the same bytes: each chunk is a whole number of bytes)."""
    flat = y.reshape(-1)
    n = flat.numel()
    if n <= PACK_CHUNK:
        return pack_mask(flat > 0)
    packed = torch.empty((n + 7) // 8, dtype=torch.uint8, device=y.device)
    for start in range(0, n, PACK_CHUNK):
        packed[start // 8 : (min(n, start + PACK_CHUNK) + 7) // 8] = pack_mask(flat[start : start + PACK_CHUNK] > 0)
    return packed


def mul_unpacked_(grad: Tensor, packed: Tensor) -> Tensor:
    """`grad.mul_(unpack_mask(packed, grad.shape))`, unpacking `PACK_CHUNK` elements at a time
    (for a contiguous `grad`; otherwise whole)."""
    n = grad.numel()
    if n <= PACK_CHUNK or not grad.is_contiguous():
        return grad.mul_(unpack_mask(packed, grad.shape))
    flat = grad.view(-1)
    for start in range(0, n, PACK_CHUNK):
        stop = min(n, start + PACK_CHUNK)
        flat[start:stop].mul_(unpack_mask(packed[start // 8 : (stop + 7) // 8], torch.Size((stop - start,))))
    return grad


# ---------------------------------------------------------------------------------------------
# Autocast: custom functions compute in the autocast dtype and convert gradients themselves
# ---------------------------------------------------------------------------------------------


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a conv would run in here: autocast's lower precision if enabled, else x's."""
    device_type = x.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


# ---------------------------------------------------------------------------------------------
# FrozenConv: conv (with optional reflect / replicate / zero pre-padding) whose backward needs
# only its weight
# ---------------------------------------------------------------------------------------------


_PAD_BACKWARD: dict[str, Callable[..., Tensor]] = {
    "reflect": torch.ops.aten.reflection_pad2d_backward,
    "replicate": torch.ops.aten.replication_pad2d_backward,
}


class ConvSpec:
    """How to run one frozen conv: the module, plus an explicit padding in front of it.

    `pad` is (left, right, top, bottom) with `pad_mode` reflect / replicate / constant, taken from
    a `ReflectionPad2d` that precedes the conv or from the conv's own non-zero `padding_mode`.
    """

    def __init__(
        self,
        conv: nn.Conv2d | nn.ConvTranspose2d,
        pad: tuple[int, int, int, int] | None = None,
        pad_mode: str = "reflect",
    ):
        self.conv = conv
        self.pad = pad
        self.pad_mode = pad_mode
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.band_rows: int | None = None  # transposed: forward and input gradient in bands (`band_upsampling`)
        if not self.transposed and conv.padding_mode != "zeros":
            if pad is not None:
                raise ValueError("a conv with its own padding_mode cannot also take an explicit pad")
            left, right, top, bottom = conv._reversed_padding_repeated_twice  # F.pad's order, 2-D
            self.pad, self.pad_mode = (left, right, top, bottom), conv.padding_mode
            self.conv_padding: str | tuple[int, ...] = (0, 0)
        else:
            self.conv_padding = conv.padding
        self._cast: tuple[Any, Tensor, Tensor | None] | None = None  # (key, weight, bias) in a low precision

    def cast_weights(self, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        """The frozen weight and bias in `dtype`, cast once and reused (autocast re-casts weights
        on every call unless they require grad: two casts of every rear weight per iteration)."""
        conv = self.conv
        if conv.weight.dtype == dtype:
            return conv.weight, conv.bias
        # data_ptr / _version: a weight replaced or changed in place (e.g. channels_last) is re-cast
        key = (
            dtype,
            conv.weight.data_ptr(),
            conv.weight._version,
            conv.weight.stride(),
            None if conv.bias is None else (conv.bias.data_ptr(), conv.bias._version),
        )
        if self._cast is None or self._cast[0] != key:
            bias = conv.bias.to(dtype) if conv.bias is not None else None
            self._cast = (key, conv.weight.to(dtype), bias)
        return self._cast[1], self._cast[2]

    @staticmethod
    def supported(conv: nn.Module, pad_mode: str = "reflect") -> bool:
        if not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) or conv.weight.requires_grad:
            return False
        if isinstance(conv.padding, str):  # "same"/"valid": convolution_backward takes only int padding
            return False
        mode = conv.padding_mode if conv.padding_mode != "zeros" else pad_mode
        return mode in _PAD_BACKWARD or mode in ("zeros", "constant")

    def forward(self, x: Tensor) -> Tensor:
        """The original module's own forward ops (bit-identical output)."""
        conv = self.conv
        if self.pad is not None and any(self.pad):
            x = F.pad(x, self.pad, mode=self.pad_mode)
        if isinstance(conv, nn.ConvTranspose2d):  # self.transposed
            return banded_conv_transpose(x, conv, self.band_rows) if self.band_rows else conv(x)
        return F.conv2d(x, conv.weight, conv.bias, conv.stride, self.conv_padding, conv.dilation, conv.groups)

    def input_grad(self, grad: Tensor, input_shape: torch.Size, padded_shape: torch.Size, dtype: torch.dtype) -> Tensor:
        """d(loss)/d(input) from d(loss)/d(output): the weight only, no saved activation."""
        conv = self.conv
        weight, _ = self.cast_weights(dtype)
        grad = grad.to(dtype)
        if isinstance(conv, nn.ConvTranspose2d) and self.band_rows and (self.pad is None or not any(self.pad)):
            return banded_conv_transpose_grad(grad, conv, input_shape, self.band_rows, weight)
        # convolution_backward reads only the input's shape (and layout hint); a zero-stride view
        # of one element stands in for the activation we did not keep.
        stand_in = grad.new_empty(1).expand(padded_shape)
        output_padding = conv.output_padding if self.transposed else (0, 0)
        grad_padded = torch.ops.aten.convolution_backward(
            grad,
            stand_in,
            weight,
            None,
            conv.stride,
            self.conv_padding,
            conv.dilation,
            self.transposed,
            output_padding,
            conv.groups,
            (True, False, False),
        )[0]
        if self.pad is None or not any(self.pad):
            return grad_padded
        if self.pad_mode in ("constant", "zeros"):
            left, right, top, bottom = self.pad
            return grad_padded[..., top : grad_padded.shape[-2] - bottom, left : grad_padded.shape[-1] - right]
        return _PAD_BACKWARD[self.pad_mode](grad_padded, grad.new_empty(1).expand(input_shape), self.pad)


class FrozenConv(torch.autograd.Function):
    """y = conv(pad(x)) with frozen weights; backward keeps no activation."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, spec: ConvSpec) -> Tensor:
        dtype = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False) if x.device.type in ("cpu", "cuda") else nullcontext():
            x_c = x.to(dtype)
            y = spec.forward(x_c) if dtype == spec.conv.weight.dtype else _cast_forward(spec, x_c, dtype)
        ctx.spec, ctx.dtype, ctx.x_dtype = spec, dtype, x.dtype
        ctx.input_shape = x.shape
        ctx.padded_shape = _padded_shape(x.shape, spec.pad)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        grad_x = ctx.spec.input_grad(grad, ctx.input_shape, ctx.padded_shape, ctx.dtype)
        return grad_x.to(ctx.x_dtype), None


def _cast_forward(spec: ConvSpec, x: Tensor, dtype: torch.dtype) -> Tensor:
    """The conv in `dtype` (autocast), with weights cast once per spec (same values as autocast's)."""
    conv = spec.conv
    if spec.pad is not None and any(spec.pad):
        x = F.pad(x, spec.pad, mode=spec.pad_mode)
    weight, bias = spec.cast_weights(dtype)
    if isinstance(conv, nn.ConvTranspose2d) and spec.band_rows:  # spec.transposed
        return banded_conv_transpose(x, conv, spec.band_rows, weight, bias)
    if isinstance(conv, nn.ConvTranspose2d):
        output_padding, padding = conv.output_padding, conv.padding
        assert not isinstance(padding, str)  # only Conv2d takes "same" / "valid"
        return F.conv_transpose2d(x, weight, bias, conv.stride, padding, output_padding, conv.groups, conv.dilation)
    return F.conv2d(x, weight, bias, conv.stride, spec.conv_padding, conv.dilation, conv.groups)


def _padded_shape(shape: torch.Size, pad: tuple[int, int, int, int] | None) -> torch.Size:
    if pad is None:
        return shape
    left, right, top, bottom = pad
    return torch.Size((*shape[:-2], shape[-2] + top + bottom, shape[-1] + left + right))


# ---------------------------------------------------------------------------------------------
# FrozenNormAct: eval BatchNorm (optional) then ReLU (optional); backward keeps the scale and a
# bit-packed sign mask
# ---------------------------------------------------------------------------------------------


def bn_supported(norm: nn.Module) -> TypeGuard[nn.BatchNorm2d]:
    return (
        isinstance(norm, nn.BatchNorm2d)
        and not norm.training
        and norm.running_var is not None
        and (norm.weight is None or not norm.weight.requires_grad)
    )


def bn_scale(norm: nn.BatchNorm2d) -> Tensor:
    """Per-channel d(out)/d(in) of eval BatchNorm: weight / sqrt(running_var + eps), shape (C,)."""
    assert norm.running_var is not None  # bn_supported
    invstd = 1.0 / torch.sqrt(norm.running_var.double() + norm.eps)
    scale = invstd if norm.weight is None else invstd * norm.weight.double()
    return scale.to(norm.running_var.dtype)


def norm_inplace(norm: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """Eval BatchNorm written over `x` (the kernel `norm(x)` runs, so bit-identical to it), where
    `x` is float32 like the norm; otherwise a new tensor `norm(x)`."""
    assert norm.running_var is not None  # bn_supported
    if x.dtype != norm.running_var.dtype or not x.is_contiguous():
        return norm(x)
    empty = x.new_empty(0)
    torch.ops.aten.native_batch_norm.out(
        x,
        norm.weight,
        norm.bias,
        norm.running_mean,
        norm.running_var,
        False,
        0.0,
        norm.eps,
        out=x,
        save_mean=empty,
        save_invstd=empty.clone(),
    )
    return x


class FrozenNormAct(torch.autograd.Function):
    """y = relu(bn(x)) (either part optional) with a frozen eval-mode BatchNorm. With `inplace`,
    y is written over x (for an x nobody else reads: a conv's fresh output), which saves an
    x-sized buffer; the values are the same."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, norm: nn.BatchNorm2d | None, relu: bool, inplace: bool = False) -> Tensor:
        if inplace:
            y = norm_inplace(norm, x) if norm is not None else x
            if y is x:
                ctx.mark_dirty(x)
        else:
            y = norm(x) if norm is not None else x.clone()
        if relu:
            y = y.relu_()
            ctx.save_for_backward(pack_positive(y))
        ctx.norm, ctx.relu, ctx.shape = norm, relu, y.shape
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        if ctx.norm is not None:
            scale = bn_scale(ctx.norm).to(grad.dtype).view(1, -1, 1, 1)
            grad_x = grad * scale
        else:
            grad_x = grad.clone()
        if ctx.relu:
            (packed,) = ctx.saved_tensors
            grad_x = mul_unpacked_(grad_x, packed)
        return grad_x, None, None, None


# ---------------------------------------------------------------------------------------------
# Lean modules (sharing the original modules' parameters)
# ---------------------------------------------------------------------------------------------


def _needs_grad(x: Any) -> bool:
    return torch.is_grad_enabled() and torch.is_tensor(x) and x.requires_grad


class LeanConvNormAct(nn.Module):
    """[pad] -> conv -> [BatchNorm] -> [ReLU] as two frozen functions."""

    def __init__(
        self,
        conv: nn.Conv2d | nn.ConvTranspose2d,
        norm: nn.BatchNorm2d | None = None,
        relu: bool = False,
        pad: nn.ReflectionPad2d | nn.ReplicationPad2d | nn.ZeroPad2d | None = None,
    ):
        super().__init__()
        self.conv, self.norm, self.relu = conv, norm, relu
        self.pad = pad
        pad_modes: dict[type, str] = {
            nn.ReflectionPad2d: "reflect",
            nn.ReplicationPad2d: "replicate",
            nn.ZeroPad2d: "constant",
        }
        pad_mode = pad_modes.get(type(pad), "reflect")
        self.spec = ConvSpec(conv, pad.padding if pad is not None else None, pad_mode)  # a 4-tuple already

    def forward(self, x: Tensor) -> Tensor:
        if not _needs_grad(x):
            y = self.spec.forward(x)
            y = norm_inplace(self.norm, y) if self.norm is not None else y
            return torch.relu_(y) if self.relu else y
        y = FrozenConv.apply(x, self.spec)
        if self.norm is not None or self.relu:
            y = FrozenNormAct.apply(y, self.norm, self.relu, True)  # the conv's output: nobody else reads it
        return y


def lean_conv(spec: ConvSpec, x: Tensor) -> Tensor:
    return FrozenConv.apply(x, spec) if _needs_grad(x) else spec.forward(x)


@overload
def lean_norm_act(norm: nn.Module, act: nn.Module, x: Tensor) -> Tensor: ...
@overload
def lean_norm_act(norm: nn.Module, act: nn.Module, x: int) -> int: ...
@overload
def lean_norm_act(norm: nn.Module, act: nn.Module, x: Tensor | int) -> Tensor | int: ...
def lean_norm_act(norm: nn.Module, act: nn.Module, x: Tensor | int) -> Tensor | int:
    """norm then act, lean where both are (BatchNorm or Identity) and (ReLU or Identity); an empty
    branch (`models.protocol.is_empty`) goes through them as it is."""
    if is_empty(x):
        return act(norm(x))
    norm_ok = isinstance(norm, nn.Identity) or bn_supported(norm)
    act_ok = isinstance(act, (nn.Identity, nn.ReLU))
    if not (norm_ok and act_ok and _needs_grad(x)):
        return act(norm(x))
    bn = None if isinstance(norm, nn.Identity) else norm
    relu = isinstance(act, nn.ReLU)
    if bn is None and not relu:
        return x
    return FrozenNormAct.apply(x, bn, relu)


class LinearMap(torch.autograd.Function):
    """y = fn(x) for a *linear* fn; backward saves nothing.

    Autograd would keep the FFT's input and `torch.complex`'s parts; the vector-Jacobian product
    of a linear map is the same at every point, so backward differentiates fn at zero instead.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.fn, ctx.shape, ctx.dtype = fn, x.shape, x.dtype
        return fn(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        with torch.enable_grad():
            zero = torch.zeros(ctx.shape, dtype=ctx.dtype, device=grad.device, requires_grad=True)
            (grad_x,) = torch.autograd.grad(ctx.fn(zero), zero, grad)
        return grad_x, None


def linear_map(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    return LinearMap.apply(x, fn) if _needs_grad(x) else fn(x)


_PADS = (nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d)


def lean_sequence(modules: list[nn.Module], unknown: set[str] | None = None) -> nn.Sequential:
    """Fuse runs of [pad] conv [BatchNorm] [ReLU] into `LeanConvNormAct`; make the rest lean."""
    out: list[nn.Module] = []
    i = 0
    while i < len(modules):
        m = modules[i]
        pad = None
        if (
            isinstance(m, _PADS)
            and i + 1 < len(modules)
            and isinstance(modules[i + 1], nn.Conv2d)
            and modules[i + 1].padding_mode == "zeros"
            and ConvSpec.supported(modules[i + 1])
        ):
            pad, i = m, i + 1
            m = modules[i]
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and ConvSpec.supported(m):
            j = i + 1
            norm = None
            if j < len(modules) and bn_supported(candidate := modules[j]):
                norm, j = candidate, j + 1
            relu = j < len(modules) and isinstance(modules[j], nn.ReLU)
            j += int(relu)
            out.append(LeanConvNormAct(m, norm, relu, pad))
            i = j
            continue
        if pad is not None:  # a pad whose conv is not supported: keep both
            out.append(pad)
        out.append(lean_module(m, unknown))
        i += 1
    return nn.Sequential(*out)


def lean_module(module: nn.Module, unknown: set[str] | None = None) -> nn.Module:
    """The lean version of one module; modules nobody registered a lean version for are returned
    unchanged (plain autograd), their class names added to `unknown` when it is given."""
    if isinstance(module, nn.Sequential):
        return lean_sequence(list(module), unknown)
    make_lean = handler("lean", module)
    if make_lean is not None:
        return make_lean(module)
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and ConvSpec.supported(module):
        return LeanConvNormAct(module)
    if isinstance(module, nn.BatchNorm2d) and bn_supported(module):
        return LeanNormAct(module, relu=False)
    if isinstance(module, nn.ReLU):
        return LeanNormAct(None, relu=True)
    if unknown is not None and not type(module).__module__.startswith("torch."):
        unknown.add(type(module).__name__)
    return module


class LeanNormAct(nn.Module):
    """A BatchNorm and/or ReLU that does not follow a conv (rare)."""

    def __init__(self, norm: nn.BatchNorm2d | None, relu: bool):
        super().__init__()
        self.norm, self.relu = norm, relu

    def forward(self, x: Tensor) -> Tensor:
        return lean_norm_act(
            self.norm if self.norm is not None else nn.Identity(), nn.ReLU() if self.relu else nn.Identity(), x
        )


def lean_rear(stage: nn.Sequential) -> nn.Sequential:
    """A rear stage (top-level modules, first trunk block onwards) with the lean backward.

    Returns a new `nn.Sequential` sharing the stage's parameters. Runs of conv/BN/ReLU are fused
    into one module each, so it is shorter than `stage` and its indices differ.
    """
    unknown: set[str] = set()
    lean = lean_sequence(list(stage), unknown)
    if unknown and frozenset(unknown) not in _REPORTED:
        _REPORTED.add(frozenset(unknown))
        log.info(
            "lean backward: %s run under plain autograd (no lean version registered: "
            "lama_refine.models.register_handler('lean', ...))",
            ", ".join(sorted(unknown)),
        )
    return lean


def band_upsampling(stage: nn.Module, rows: int) -> None:
    """Run the forward of every lean transposed conv in `stage` in bands of `rows` output rows
    (`tiling.banded_conv_transpose`, `perf.tile_rows`), and its input gradient in bands too: the
    upsampling convs' buffers are an iteration's largest after the full-resolution tail's."""
    for module in stage.modules():
        spec = getattr(module, "spec", None)
        if isinstance(spec, ConvSpec) and spec.transposed:
            spec.band_rows = rows


_REPORTED: set[frozenset[str]] = set()  # one INFO line per set of unknown modules, not one per stage or trace


__all__ = [
    "ConvSpec",
    "FrozenConv",
    "FrozenNormAct",
    "LeanConvNormAct",
    "LeanNormAct",
    "LinearMap",
    "band_upsampling",
    "bn_scale",
    "lean_conv",
    "lean_module",
    "lean_norm_act",
    "lean_rear",
    "lean_sequence",
    "linear_map",
    "mul_unpacked_",
    "norm_inplace",
    "pack_mask",
    "pack_positive",
    "unpack_mask",
]
