"""The FFC ResNet generator of LaMa ("big-lama" layout).

Module names, nesting and parameter names follow LaMa's `FFCResNetGenerator`, so the
`state_dict()` of a LaMa checkpoint loads unchanged (see `tests/fixtures/big-lama`).

Features travel between the trunk's blocks as a pair `(x_local, x_global)`; a branch
without channels is the integer 0, as in LaMa, so that `conv(0)` style sums stay cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from lama_refine.models.lama.fill import input_fill_layer

Features = tuple[Tensor, Tensor | int]


class FourierUnit(nn.Module):
    """Real 2-D FFT -> 1x1 conv + BN + ReLU on (real, imag) channels -> inverse FFT."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 1, fft_norm: str = "ortho"):
        super().__init__()
        self.groups = groups
        self.fft_norm = fft_norm
        self.conv_layer = nn.Conv2d(in_channels * 2, out_channels * 2, kernel_size=1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels * 2)
        self.relu = nn.ReLU(inplace=True)

    def to_spectrum(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 2C, H, W // 2 + 1): rfft2, channels interleaved (c, re/im)."""
        ffted = torch.fft.rfftn(x, dim=(-2, -1), norm=self.fft_norm)
        # LaMa interleaves channels as (c, re/im): channel 2c is real, 2c+1 imaginary.
        ffted = torch.stack((ffted.real, ffted.imag), dim=-1)
        ffted = ffted.permute(0, 1, 4, 2, 3).contiguous()
        return ffted.view((x.shape[0], -1) + ffted.size()[3:])

    def from_spectrum(self, ffted: Tensor, size: tuple[int, int]) -> Tensor:
        """Inverse layout of `to_spectrum`, then the inverse rfft2 to `size` (H, W)."""
        ffted = ffted.view((ffted.shape[0], -1, 2) + ffted.size()[2:]).permute(0, 1, 3, 4, 2).contiguous()
        ffted = torch.complex(ffted[..., 0], ffted[..., 1])
        return torch.fft.irfftn(ffted, s=size, dim=(-2, -1), norm=self.fft_norm)

    def forward(self, x: Tensor) -> Tensor:
        ffted = self.relu(self.bn(self.conv_layer(self.to_spectrum(x))))
        return self.from_spectrum(ffted, (x.shape[-2], x.shape[-1]))


def stack_quadrants(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H // 2, W // 2)-ish: the four quadrants of the first C // 4 channels
    stacked as channels, the input of LaMa's local Fourier unit (split at H // 2 on both axes)."""
    split = x.shape[-2] // 2
    xs = torch.cat(torch.split(x[:, : x.shape[1] // 4], split, dim=-2), dim=1).contiguous()
    return torch.cat(torch.split(xs, split, dim=-1), dim=1).contiguous()


class SpectralTransform(nn.Module):
    """The global->global path: 1x1 conv to half the channels, Fourier unit, 1x1 conv back."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        groups: int = 1,
        enable_lfu: bool = True,
        **fu_kwargs: Any,
    ):
        super().__init__()
        self.enable_lfu = enable_lfu
        self.downsample = nn.AvgPool2d(kernel_size=(2, 2), stride=2) if stride == 2 else nn.Identity()
        self.stride = stride
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels // 2, kernel_size=1, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels // 2),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(out_channels // 2, out_channels // 2, groups, **fu_kwargs)
        if enable_lfu:
            self.lfu = FourierUnit(out_channels // 2, out_channels // 2, groups)
        self.conv2 = nn.Conv2d(out_channels // 2, out_channels, kernel_size=1, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.downsample(x))
        output = self.fu(x)
        xs = self.lfu(stack_quadrants(x)).repeat(1, 1, 2, 2).contiguous() if self.enable_lfu else 0
        return self.conv2(x + output + xs)


def _conv_or_identity(active: bool, *args: Any, **kwargs: Any) -> nn.Module:
    return nn.Conv2d(*args, **kwargs) if active else nn.Identity()


class FFC(nn.Module):
    """Fast Fourier convolution: local->local, local->global, global->local, global->global."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        enable_lfu: bool = True,
        padding_type: str = "reflect",
        gated: bool = False,
        **spectral_kwargs: Any,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"FFC stride must be 1 or 2, got {stride}")
        self.stride = stride
        in_cg = int(in_channels * ratio_gin)
        in_cl = in_channels - in_cg
        out_cg = int(out_channels * ratio_gout)
        out_cl = out_channels - out_cg
        self.ratio_gin = ratio_gin
        self.ratio_gout = ratio_gout
        self.global_in_num = in_cg

        conv = dict(
            stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias, padding_mode=padding_type
        )
        self.convl2l = _conv_or_identity(in_cl > 0 and out_cl > 0, in_cl, out_cl, kernel_size, **conv)
        self.convl2g = _conv_or_identity(in_cl > 0 and out_cg > 0, in_cl, out_cg, kernel_size, **conv)
        self.convg2l = _conv_or_identity(in_cg > 0 and out_cl > 0, in_cg, out_cl, kernel_size, **conv)
        self.convg2g: SpectralTransform | nn.Identity
        if in_cg > 0 and out_cg > 0:
            self.convg2g = SpectralTransform(
                in_cg, out_cg, stride, 1 if groups == 1 else groups // 2, enable_lfu, **spectral_kwargs
            )
        else:
            self.convg2g = nn.Identity()
        self.gated = gated
        self.gate = _conv_or_identity(in_cg > 0 and out_cl > 0 and gated, in_channels, 2, 1)

    def forward(self, x: Tensor | Features) -> tuple[Tensor | int, Tensor | int]:
        """(local, global); a branch is 0 where it has no channels (the local one with ratio_gout 1)."""
        x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        out_xl: Tensor | int = 0
        out_xg: Tensor | int = 0
        g2l_gate: Tensor | int
        l2g_gate: Tensor | int
        if self.gated:
            total_input = torch.cat([x_l, x_g], dim=1) if torch.is_tensor(x_g) else x_l
            gates = torch.sigmoid(self.gate(total_input))
            g2l_gate, l2g_gate = gates.chunk(2, dim=1)
        else:
            g2l_gate, l2g_gate = 1, 1
        if self.ratio_gout != 1:
            out_xl = self.convl2l(x_l) + self.convg2l(x_g) * g2l_gate
        if self.ratio_gout != 0:
            out_xg = self.convl2g(x_l) * l2g_gate + self.convg2g(x_g)
        return out_xl, out_xg


class FFC_BN_ACT(nn.Module):  # LaMa's class name, kept for checkpoint/layout parity
    """FFC followed by BatchNorm + activation on each branch (Identity where a branch is empty)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        activation_layer: type[nn.Module] = nn.Identity,
        padding_type: str = "reflect",
        enable_lfu: bool = True,
        **kwargs: Any,
    ):
        super().__init__()
        self.ffc = FFC(
            in_channels,
            out_channels,
            kernel_size,
            ratio_gin,
            ratio_gout,
            stride,
            padding,
            dilation,
            groups,
            bias,
            enable_lfu,
            padding_type=padding_type,
            **kwargs,
        )
        global_channels = int(out_channels * ratio_gout)
        self.bn_l = nn.Identity() if ratio_gout == 1 else norm_layer(out_channels - global_channels)
        self.bn_g = nn.Identity() if ratio_gout == 0 else norm_layer(global_channels)
        self.act_l = nn.Identity() if ratio_gout == 1 else activation_layer(inplace=True)
        self.act_g = nn.Identity() if ratio_gout == 0 else activation_layer(inplace=True)

    def forward(self, x: Tensor | Features) -> Features:
        x_l, x_g = self.ffc(x)
        return self.act_l(self.bn_l(x_l)), self.act_g(self.bn_g(x_g))


class FFCResnetBlock(nn.Module):
    """Two FFC_BN_ACT blocks with an identity skip on both branches."""

    def __init__(
        self,
        dim: int,
        padding_type: str,
        norm_layer: type[nn.Module],
        activation_layer: type[nn.Module] = nn.ReLU,
        dilation: int = 1,
        inline: bool = False,
        **conv_kwargs: Any,
    ):
        super().__init__()
        block = dict(
            kernel_size=3,
            padding=dilation,
            dilation=dilation,
            norm_layer=norm_layer,
            activation_layer=activation_layer,
            padding_type=padding_type,
            **conv_kwargs,
        )
        self.conv1 = FFC_BN_ACT(dim, dim, **block)
        self.conv2 = FFC_BN_ACT(dim, dim, **block)
        self.inline = inline

    def forward(self, x: Tensor | Features) -> Tensor | Features:
        x_g: Tensor | int
        if self.inline:
            assert isinstance(x, Tensor)  # inline blocks take and give one tensor, channels local first
            n_global = self.conv1.ffc.global_in_num
            x_l, x_g = x[:, :-n_global], x[:, -n_global:]
        else:
            x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        id_l, id_g = x_l, x_g
        x_l, x_g = self.conv2(self.conv1((x_l, x_g)))
        out = (id_l + x_l, id_g + x_g)
        if self.inline:  # both branches are slices of the input tensor (plus the convs' outputs)
            return torch.cat(cast(tuple[Tensor, Tensor], out), dim=1)
        return out


class ConcatTupleLayer(nn.Module):
    """(x_local, x_global) -> one tensor, channels local first."""

    def forward(self, x: Features) -> Tensor:
        x_l, x_g = x
        if not torch.is_tensor(x_g):
            return x_l
        return torch.cat((x_l, x_g), dim=1)


def output_activation(kind: bool | str | None) -> nn.Module | None:
    """LaMa's `add_out_act`: True means tanh, a string names the activation, falsy means none."""
    if not kind:
        return None
    kind = "tanh" if kind is True else kind
    activations = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if kind not in activations:
        raise ValueError(f"unknown output activation {kind!r}; expected one of {sorted(activations)}")
    return activations[kind]()


def decoder_layers(
    ngf: int, n_downsampling: int, output_nc: int, add_out_act: bool | str, max_features: int = 1024
) -> list[nn.Module]:
    """The tail both LaMa generators share: `n_downsampling` x (ConvTranspose2d stride 2, BN, ReLU),
    ReflectionPad2d(3), 7x7 conv to `output_nc`, the output activation.

    LaMa reuses one ReLU object for every decoder stage (a default-argument instance); it has
    no state, but sharing it keeps the module layout identical.
    """
    up_activation = nn.ReLU(True)
    layers: list[nn.Module] = []
    for i in range(n_downsampling):
        mult = 2 ** (n_downsampling - i)
        channels_in, channels_out = min(max_features, ngf * mult), min(max_features, int(ngf * mult / 2))
        layers += [
            nn.ConvTranspose2d(channels_in, channels_out, kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(channels_out),
            up_activation,
        ]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0)]
    out_act = output_activation(add_out_act)
    return layers + ([out_act] if out_act is not None else [])


class FFCResNetGenerator(nn.Module):
    """LaMa's `ffc_resnet` generator: front (pad, 7x7, downsampling), FFC resnet trunk, decoder.

    `input_fill` (not in LaMa; default None = LaMa): "diffusion" fills the input's hole with a
    classical fill first (`models/fill.py`), inside slot 0 of `model`."""

    def __init__(
        self,
        input_nc: int = 4,
        output_nc: int = 3,
        ngf: int = 64,
        n_downsampling: int = 3,
        n_blocks: int = 9,
        padding_type: str = "reflect",
        add_out_act: bool | str = True,
        max_features: int = 1024,
        init_conv_kwargs: Mapping[str, Any] | None = None,
        downsample_conv_kwargs: Mapping[str, Any] | None = None,
        resnet_conv_kwargs: Mapping[str, Any] | None = None,
        input_fill: str | None = None,
    ):
        super().__init__()
        init_conv_kwargs = dict(init_conv_kwargs or {})
        downsample_conv_kwargs = dict(downsample_conv_kwargs or {})
        resnet_conv_kwargs = dict(resnet_conv_kwargs or {})
        norm, act = nn.BatchNorm2d, nn.ReLU

        fill = input_fill_layer(input_fill)
        # The fill shares slot 0 with the padding so parameter names and indices stay LaMa's.
        model: list[nn.Module] = [
            nn.ReflectionPad2d(3) if fill is None else nn.Sequential(fill, nn.ReflectionPad2d(3)),
            FFC_BN_ACT(
                input_nc, ngf, kernel_size=7, padding=0, norm_layer=norm, activation_layer=act, **init_conv_kwargs
            ),
        ]
        for i in range(n_downsampling):
            kwargs = dict(downsample_conv_kwargs)
            if i == n_downsampling - 1:
                # The last downsampling block already emits the split the trunk expects.
                kwargs["ratio_gout"] = resnet_conv_kwargs.get("ratio_gin", 0)
            mult = 2**i
            model.append(
                FFC_BN_ACT(
                    min(max_features, ngf * mult),
                    min(max_features, ngf * mult * 2),
                    kernel_size=3,
                    stride=2,
                    padding=1,
                    norm_layer=norm,
                    activation_layer=act,
                    **kwargs,
                )
            )

        bottleneck = min(max_features, ngf * 2**n_downsampling)
        for _ in range(n_blocks):
            model.append(
                FFCResnetBlock(
                    bottleneck, padding_type=padding_type, activation_layer=act, norm_layer=norm, **resnet_conv_kwargs
                )
            )
        model.append(ConcatTupleLayer())

        model += decoder_layers(ngf, n_downsampling, output_nc, add_out_act, max_features)
        self.model = nn.Sequential(*model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, input_nc, H, W), H and W multiples of 2**n_downsampling -> (B, output_nc, H, W)."""
        return self.model(x)
