"""LPIPS (Zhang, Isola, Efros, Shechtman, Wang 2018, "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric"), version 0.1, as the `lpips` package (and torchmetrics, which
wraps it) computes it, without torchvision.

    d(x, y) = sum over layers l of  mean over pixels of  w_l . (n(f_l(s(x))) - n(f_l(s(y))))^2

- x, y: RGB images in [-1, 1] (`distance` takes [0, 1] and maps them, lpips' `normalize=True`);
- s: lpips' ScalingLayer, `(x - shift) / scale` with shift (-.030, -.088, -.188) and scale
  (.458, .448, .450), ImageNet's statistics in [-1, 1] units;
- f_l: the l-th ReLU output of an ImageNet classifier's features, the `slice1..slice5` cut of
  lpips' `pretrained_networks.py`: AlexNet's relu1..relu5 (64, 192, 384, 256, 256 channels),
  VGG16's relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (64, 128, 256, 512, 512);
- n: unit length over channels, `f / (sqrt(sum f^2) + 1e-10)` (lpips' `normalize_tensor`);
- w_l: the 0.1 linear heads, a 1x1 conv without bias per layer, learned on human judgements
  (BAPPS), then the spatial mean.

The feature stacks are torchvision's `alexnet().features` / `vgg16().features` rebuilt here (a
few convs, ReLUs and max-pools), so their published state dicts load by torchvision's own key
names (`features.0.weight`, ...): torchvision's wheel does not load against the CPU torch this
project uses. Weights come only through `lama-refine-download lpips-alex` (or `lpips-vgg`), which
fetches the backbone from download.pytorch.org and the heads from the lpips repository, each
verified (`WEIGHTS`); they are read with `torch.load(weights_only=True)`, so no pickled code runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lama_refine.models.zoo import KnownModel, cached_file

log = logging.getLogger("lama_refine.metrics.lpips")

NETS = ("alex", "vgg")
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10

# (out channels, kernel, stride, padding) per conv, "M" a 3x3/2 max-pool for AlexNet and 2x2/2 for VGG,
# exactly torchvision's `features` (so the state dict's indices match); `TAPS` are the indices of the
# ReLUs whose outputs LPIPS compares, the ends of lpips' slice1..slice5.
# fmt: off
ALEX = [(64, 11, 4, 2), "R", "M", (192, 5, 1, 2), "R", "M", (384, 3, 1, 1), "R", (256, 3, 1, 1), "R",
    (256, 3, 1, 1), "R", "M"]
VGG16 = [(64, 3, 1, 1), "R", (64, 3, 1, 1), "R", "M", (128, 3, 1, 1), "R", (128, 3, 1, 1), "R", "M",
    (256, 3, 1, 1), "R", (256, 3, 1, 1), "R", (256, 3, 1, 1), "R", "M", (512, 3, 1, 1), "R", (512, 3, 1, 1),
    "R", (512, 3, 1, 1), "R", "M", (512, 3, 1, 1), "R", (512, 3, 1, 1), "R", (512, 3, 1, 1), "R", "M"]
# fmt: on
LAYOUTS = {"alex": (ALEX, 3, [1, 4, 7, 9, 11]), "vgg": (VGG16, 2, [3, 8, 15, 22, 29])}
CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}

_PYTORCH = "https://download.pytorch.org/models/"
_LPIPS = "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/"

# The files LPIPS needs, per network: the torchvision backbone and the lpips 0.1 heads.
# Backbones: URLs from torchvision's `AlexNet_Weights.IMAGENET1K_V1` / `VGG16_Weights.IMAGENET1K_V1`
# (pytorch/vision, torchvision/models/alexnet.py and vgg.py). torchvision publishes no full digest:
# the 8 hex digits in each file name are the start of its SHA-256, which its loader checks
# (`torch.hub.load_state_dict_from_url(check_hash=True)`), and so does lama-refine-download.
# Heads: the files of the `lpips` 0.1.4 wheel on PyPI (lpips/weights/v0.1/{alex,vgg}.pth, the same
# files as in the repository's folder the URL names), whose full SHA-256 was computed from that
# wheel (its RECORD agrees) and whose first 8 digits match the names torchmetrics gives them
# (`LPIPS_v0.1_alex-df73285e.pth`, `LPIPS_v0.1_vgg-a78928a0.pth`).
WEIGHTS: dict[str, tuple[KnownModel, KnownModel]] = {
    "alex": (
        KnownModel(
            name="lpips-alex-backbone",
            url=_PYTORCH + "alexnet-owt-7be5be79.pth",
            algorithm="sha256",
            digest="7be5be79",
            source="torchvision AlexNet_Weights.IMAGENET1K_V1 (hash prefix in the name)",
            description="torchvision's ImageNet AlexNet (LPIPS backbone)",
        ),
        KnownModel(
            name="lpips-alex-lin",
            url=_LPIPS + "alex.pth",
            algorithm="sha256",
            digest="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            source="lpips 0.1.4 wheel on PyPI, lpips/weights/v0.1/alex.pth",
            description="LPIPS 0.1 linear heads for AlexNet",
        ),
    ),
    "vgg": (
        KnownModel(
            name="lpips-vgg-backbone",
            url=_PYTORCH + "vgg16-397923af.pth",
            algorithm="sha256",
            digest="397923af",
            source="torchvision VGG16_Weights.IMAGENET1K_V1 (hash prefix in the name)",
            description="torchvision's ImageNet VGG16 (LPIPS backbone)",
        ),
        KnownModel(
            name="lpips-vgg-lin",
            url=_LPIPS + "vgg.pth",
            algorithm="sha256",
            digest="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
            source="lpips 0.1.4 wheel on PyPI, lpips/weights/v0.1/vgg.pth",
            description="LPIPS 0.1 linear heads for VGG16",
        ),
    ),
}
BUNDLES = {f"lpips-{net}": files for net, files in WEIGHTS.items()}
"""`lama-refine-download lpips-alex` fetches both files of the AlexNet variant."""


def features(net: str) -> nn.Sequential:
    """torchvision's `alexnet().features` or `vgg16().features`, module for module."""
    layout, pool, _ = LAYOUTS[net]
    layers: list[nn.Module] = []
    channels = 3
    for item in layout:
        if item == "R":
            layers.append(nn.ReLU(inplace=True))
        elif item == "M":
            layers.append(nn.MaxPool2d(kernel_size=pool, stride=2))
        else:
            out, kernel, stride, padding = (int(v) for v in item)
            layers.append(nn.Conv2d(channels, out, kernel, stride=stride, padding=padding))
            channels = out
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """The metric's network; `forward(x, y)` takes (N, 3, H, W) in [-1, 1] and returns (N,)."""

    shift: Tensor
    scale: Tensor

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"lpips={net!r}: use one of {', '.join(NETS)}")
        self.net = net
        self.features = features(net)
        self.taps = LAYOUTS[net][2]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def layer_outputs(self, x: Tensor) -> list[Tensor]:
        outs = []
        h = (x - self.shift) / self.scale
        for i, module in enumerate(list(self.features)[: self.taps[-1] + 1]):
            h = module(h)
            if i in self.taps:
                outs.append(h)
        return outs

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = torch.zeros(x.shape[0], 1, device=x.device, dtype=x.dtype)
        for lin, fx, fy in zip(self.lins, self.layer_outputs(x), self.layer_outputs(y), strict=True):
            diff = (unit(fx) - unit(fy)) ** 2
            total = total + lin(diff).mean(dim=(2, 3))
        return total.flatten()

    @torch.no_grad()
    def distance(self, a: Tensor, b: Tensor) -> float:
        """LPIPS between two (1, 3, H, W) images in [0, 1] (float, on this module's device): the
        images are brought to one size first (the pipeline may return the budget-shrunk size)."""
        if a.shape[-2:] != b.shape[-2:]:
            b = F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False)
        param = next(self.lins.parameters())
        a, b = (t.to(param.device, param.dtype).clamp(0, 1) * 2 - 1 for t in (a, b))
        return float(self(a, b)[0])

    def load_files(self, backbone: Path, heads: Path) -> LPIPS:
        """Load torchvision's state dict (its `features.*` entries; the classifier is not used)
        and lpips' heads (`lin<k>.model.1.weight`), both without running pickled code."""
        state = torch.load(backbone, map_location="cpu", weights_only=True)
        feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        self.features.load_state_dict(feats)
        heads_state = torch.load(heads, map_location="cpu", weights_only=True)
        lins = {f"{k}.weight": heads_state[f"lin{k}.model.1.weight"] for k in range(len(self.lins))}
        self.lins.load_state_dict(lins)
        return self


def unit(f: Tensor) -> Tensor:
    """Unit length over channels at each pixel (lpips' `normalize_tensor`)."""
    return f / (torch.sqrt((f**2).sum(dim=1, keepdim=True)) + EPS)


def download_command(net: str) -> str:
    return f"lama-refine-download lpips-{net}"


def missing_files(net: str) -> list[str]:
    return [m.name for m in WEIGHTS[net] if cached_file(m.name) is None]


def load(net: str = "alex", device: torch.device | str = "cpu") -> LPIPS:
    """The metric with its downloaded weights; FileNotFoundError naming the download command
    when they are not downloaded."""
    if net not in NETS:
        raise ValueError(f"lpips={net!r}: use one of {', '.join(NETS)}, or lpips=null for none")
    missing = missing_files(net)
    if missing:
        raise FileNotFoundError(f"LPIPS ({net}) needs {', '.join(missing)}: {download_command(net)}")
    backbone, heads = (cached_file(m.name) for m in WEIGHTS[net])
    assert backbone is not None and heads is not None  # missing_files said both are there
    return LPIPS(net).load_files(backbone, heads).to(device)


def load_or_none(net: str | None, device: torch.device | str = "cpu") -> LPIPS | None:
    """`load`, or None with one log line saying how to get the weights (LPIPS is skipped)."""
    if not net:
        return None
    try:
        return load(net, device)
    except FileNotFoundError:
        log.warning("LPIPS skipped: its weights are not downloaded; to measure it, run once: %s", download_command(net))
        return None


__all__ = ["BUNDLES", "LPIPS", "NETS", "WEIGHTS", "download_command", "features", "load", "load_or_none", "unit"]
