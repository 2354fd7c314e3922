"""LaMa's `pix2pixhd_global` generator (the `lama-regular` / `big-lama-regular` models).

Module names, nesting and parameter names follow LaMa's `GlobalGenerator` with its
pix2pixHD `ResnetBlock` trunk, so a LaMa checkpoint's `state_dict()` loads unchanged
(see `tests/fixtures/lama-regular` and `tests/fixtures/big-lama-regular`).

Only what the released configs use is supported (`conv_kind: default`, BatchNorm, ReLU);
other LaMa knobs are accepted only at their default value, anything else is a ValueError,
so a config we cannot reproduce fails loudly instead of building a different network.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lama_refine.models.lama.ffc import decoder_layers

# LaMa options this implementation accepts only at the value that disables them.
_DEFAULT_ONLY_OPTIONS: dict[str, Any] = {
    "dilated_blocks_n": 0,
    "dilated_blocks_n_start": 0,
    "dilated_blocks_n_middle": 0,
    "is_resblock_depthwise": False,
    "ffc_positions": None,
    "affine": None,
    "second_dilation": None,
}


def _padding_layers(padding_type: str, amount: int) -> tuple[list[nn.Module], int]:
    """Explicit padding module (reflect / replicate) or the conv's own zero padding."""
    if padding_type == "reflect":
        return [nn.ReflectionPad2d(amount)], 0
    if padding_type == "replicate":
        return [nn.ReplicationPad2d(amount)], 0
    if padding_type == "zero":
        return [], amount
    raise ValueError(f"unknown padding_type {padding_type!r}; expected reflect, replicate or zero")


class ResnetBlock(nn.Module):
    """pix2pixHD residual block: `x + (pad, 3x3 conv, BN, act, pad, 3x3 conv, BN)(x)`.

    `activation` is a module instance, not a class: LaMa reuses one ReLU object across
    the whole front and trunk, and the module layout (`_modules`) records that sharing.
    """

    def __init__(self, dim: int, padding_type: str, activation: nn.Module):
        super().__init__()
        layers: list[nn.Module] = []
        for second in (False, True):
            pad, conv_padding = _padding_layers(padding_type, 1)
            layers += [*pad, nn.Conv2d(dim, dim, kernel_size=3, padding=conv_padding), nn.BatchNorm2d(dim)]
            if not second:
                layers.append(activation)
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


def _check_options(conv_kind: str, options: dict[str, Any]) -> None:
    """Reject config knobs this implementation would silently ignore."""
    if conv_kind != "default":
        raise ValueError(f"pix2pixhd_global: conv_kind {conv_kind!r} is not supported (only 'default')")
    unknown = sorted(set(options) - set(_DEFAULT_ONLY_OPTIONS))
    if unknown:
        raise ValueError(f"pix2pixhd_global: unknown or unsupported option(s) {unknown}")
    changed = sorted(k for k, v in options.items() if v != _DEFAULT_ONLY_OPTIONS[k])
    if changed:
        raise ValueError(
            "pix2pixhd_global: option(s) not supported unless left at their default: "
            + ", ".join(f"{k}={options[k]!r} (default {_DEFAULT_ONLY_OPTIONS[k]!r})" for k in changed)
        )


class GlobalGenerator(nn.Module):
    """LaMa's `pix2pixhd_global`: 7x7 conv, strided downsampling, ResnetBlock trunk, decoder.

    `model` indices (n_downsampling = d): first ResnetBlock at `4 + 3d`, `7 + 6d + n_blocks`
    modules with an output activation. Two ReLU objects are shared within one generator (the
    front/trunk one and the decoder one); they are created per generator, never module-global.
    """

    def __init__(
        self,
        input_nc: int = 4,
        output_nc: int = 3,
        ngf: int = 64,
        n_downsampling: int = 3,
        n_blocks: int = 9,
        padding_type: str = "reflect",
        conv_kind: str = "default",
        add_out_act: bool | str = True,
        max_features: int = 1024,
        **options: Any,
    ):
        super().__init__()
        _check_options(conv_kind, options)
        activation = nn.ReLU(True)

        def channels(mult: float) -> int:
            return min(max_features, int(ngf * mult))

        model: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0),
            nn.BatchNorm2d(ngf),
            activation,
        ]
        for i in range(n_downsampling):
            model += [
                nn.Conv2d(channels(2**i), channels(2 ** (i + 1)), kernel_size=3, stride=2, padding=1),
                nn.BatchNorm2d(channels(2 ** (i + 1))),
                activation,
            ]
        bottleneck = channels(2**n_downsampling)
        model += [ResnetBlock(bottleneck, padding_type, activation) for _ in range(n_blocks)]
        model += decoder_layers(ngf, n_downsampling, output_nc, add_out_act, max_features)
        self.model = nn.Sequential(*model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, input_nc, H, W), H and W multiples of 2**n_downsampling -> (B, output_nc, H, W)."""
        return self.model(x)
