"""The lean backward of LaMa's blocks (`lama_refine.perf.lean` explains the lean backward): FFC
(`FFC_BN_ACT`, `FFCResnetBlock`, the Fourier unit and spectral transform) and pix2pixHD's
`ResnetBlock`, built from the generic frozen-weight functions of `lama_refine.perf.lean`. `models/kinds.py`
registers them with the generator protocol (`register_handler("lean", ...)`), so `lean.py` itself
knows no LaMa class. The lean modules share the original modules' parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lama_refine.models.lama.ffc import FFC, FFC_BN_ACT, FFCResnetBlock, FourierUnit, SpectralTransform, stack_quadrants
from lama_refine.models.lama.pix2pixhd import ResnetBlock
from lama_refine.perf.lean import (
    ConvSpec,
    LeanConvNormAct,
    lean_conv,
    lean_module,
    lean_norm_act,
    lean_sequence,
    linear_map,
)


def _fft_precision(x: Tensor) -> Tensor:
    """bf16 / fp16 -> float32 for the FFT; float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


class LeanFourierUnit(nn.Module):
    """`FourierUnit` with a frozen 1x1 conv and BN+ReLU; the FFTs keep nothing for backward."""

    def __init__(self, fu: FourierUnit):
        super().__init__()
        self.fu = fu
        self.spec = ConvSpec(fu.conv_layer)

    def forward(self, x: Tensor) -> Tensor:
        # The FFT runs in float32 (no bf16/fp16 FFT on CPU; cuFFT half needs power-of-two sizes).
        x = _fft_precision(x)
        size = (x.shape[-2], x.shape[-1])
        ffted = linear_map(self.fu.to_spectrum, x)
        ffted = lean_norm_act(self.fu.bn, self.fu.relu, lean_conv(self.spec, ffted))
        return linear_map(lambda f: self.fu.from_spectrum(f, size), _fft_precision(ffted))


class LeanSpectralTransform(nn.Module):
    """`SpectralTransform`: conv1 (1x1+BN+ReLU), Fourier unit(s), conv2 (1x1), all lean."""

    def __init__(self, st: SpectralTransform):
        super().__init__()
        self.st = st
        conv, norm, act = st.conv1
        self.conv1 = lean_sequence([conv, norm, act])
        self.fu = LeanFourierUnit(st.fu)
        self.lfu = LeanFourierUnit(st.lfu) if st.enable_lfu else None
        self.conv2 = ConvSpec(st.conv2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.st.downsample(x))
        output = self.fu(x)
        xs = self.lfu(stack_quadrants(x)).repeat(1, 1, 2, 2).contiguous() if self.lfu is not None else 0
        return lean_conv(self.conv2, x + output.to(x.dtype) + xs)


def _lean_path(module: nn.Module) -> nn.Module:
    """One FFC path: a lean conv, a lean spectral transform, or the module itself (Identity)."""
    if isinstance(module, nn.Conv2d) and ConvSpec.supported(module):
        return LeanConvNormAct(module)
    if isinstance(module, SpectralTransform):
        return LeanSpectralTransform(module)
    return module


def ffc_supported(block: FFC_BN_ACT) -> bool:
    ffc = block.ffc
    convs_ok = all(
        isinstance(m, (nn.Identity, SpectralTransform)) or ConvSpec.supported(m)
        for m in (ffc.convl2l, ffc.convl2g, ffc.convg2l)
    )
    spectral_ok = not isinstance(ffc.convg2g, SpectralTransform) or all(
        ConvSpec.supported(c) for c in (ffc.convg2g.conv1[0], ffc.convg2g.fu.conv_layer, ffc.convg2g.conv2)
    )
    return isinstance(ffc, FFC) and not ffc.gated and convs_ok and spectral_ok


class LeanFFCBNAct(nn.Module):
    """`FFC_BN_ACT` (four FFC paths, then BN + activation per branch) with lean paths."""

    def __init__(self, block: FFC_BN_ACT):
        super().__init__()
        self.block = block
        ffc = block.ffc
        self.l2l, self.l2g = _lean_path(ffc.convl2l), _lean_path(ffc.convl2g)
        self.g2l, self.g2g = _lean_path(ffc.convg2l), _lean_path(ffc.convg2g)

    def forward(self, x: Tensor | tuple) -> tuple:
        block, ffc = self.block, self.block.ffc
        x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        out_l: Tensor | int = 0
        out_g: Tensor | int = 0
        if ffc.ratio_gout != 1:
            out_l = self.l2l(x_l) + self.g2l(x_g)
        if ffc.ratio_gout != 0:
            out_g = self.l2g(x_l) + self.g2g(x_g)
        return lean_norm_act(block.bn_l, block.act_l, out_l), lean_norm_act(block.bn_g, block.act_g, out_g)


class LeanFFCResnetBlock(nn.Module):
    """`FFCResnetBlock` with lean conv blocks; the identity skips are plain additions."""

    def __init__(self, block: FFCResnetBlock):
        super().__init__()
        self.block = block
        self.conv1 = lean_module(block.conv1)
        self.conv2 = lean_module(block.conv2)

    def forward(self, x: Any) -> Any:
        block = self.block
        if block.inline:
            n_global = block.conv1.ffc.global_in_num
            x_l, x_g = x[:, :-n_global], x[:, -n_global:]
        else:
            x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        x_l2, x_g2 = self.conv2(self.conv1((x_l, x_g)))
        out = (x_l + x_l2, x_g + x_g2)
        return torch.cat(out, dim=1) if block.inline else out


class LeanResidual(nn.Module):
    """pix2pixHD `ResnetBlock`: x + lean(conv_block)(x)."""

    def __init__(self, block: ResnetBlock):
        super().__init__()
        self.block = block
        self.conv_block = lean_module(block.conv_block)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


def lean_ffc_bn_act(block: FFC_BN_ACT) -> nn.Module:
    """The lean version of an `FFC_BN_ACT` where every path has one, else the block as it is."""
    return LeanFFCBNAct(block) if ffc_supported(block) else block


__all__ = [
    "LeanFFCBNAct",
    "LeanFFCResnetBlock",
    "LeanFourierUnit",
    "LeanResidual",
    "LeanSpectralTransform",
    "ffc_supported",
    "lean_ffc_bn_act",
]
