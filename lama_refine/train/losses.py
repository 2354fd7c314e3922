"""Losses of the demo recipe: what of LaMa's objective can be had with no pretrained network.

LaMa trains with L1 on the known pixels, a high-receptive-field perceptual loss (a pretrained
segmentation network), a PatchGAN adversarial loss and discriminator feature matching. No
pretrained network can be downloaded here, so the perceptual term is replaced by a masked L1
on the hole plus a multi-scale image-gradient term (edges and texture contrast, which a plain
L1 washes out); the adversarial part is a small PatchGAN with the same mask-aware labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-6


def masked_l1(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean |pred - target| over the pixels where `weight` (B, 1, H, W) is set, all channels.

    Normalising by the weighted pixel count keeps small holes as important as large ones.
    """
    weight = weight.expand_as(pred)
    return ((pred - target).abs() * weight).sum() / (weight.sum() + EPS)


def image_gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences along width and height, each cropped to (H-1, W-1)."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return dx, dy


def gradient_loss(pred: Tensor, target: Tensor, mask: Tensor, n_scales: int = 3) -> Tensor:
    """Masked L1 between image gradients at `n_scales` octaves, averaged over scales.

    The mask is dilated by one pixel so the seam between fill and context counts too.
    """
    mask = F.max_pool2d(mask, 3, stride=1, padding=1)
    total = pred.new_zeros(())
    for scale in range(n_scales):
        if scale:
            pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
            mask = F.max_pool2d(mask, 2)
        weight = mask[..., :-1, :-1]
        for p, t in zip(image_gradients(pred), image_gradients(target), strict=True):
            total = total + masked_l1(p, t, weight)
    return total / (2 * n_scales)


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: stride-2 4x4 convs, LeakyReLU, one logit per ~40 px patch.

    Returns the logits and the intermediate features (for feature matching). No
    normalisation layer, so real and fake batches can be scored separately.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 32, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(n_layers):
            out = ndf * 2**i
            layers.append(
                nn.Sequential(nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True))
            )
            channels = out
        self.features = nn.ModuleList(layers)
        self.head = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        feats = []
        for layer in self.features:
            x = layer(x)
            feats.append(x)
        return self.head(x), feats


def resize_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A hole mask at a feature map's size: a patch counts as fake if any pixel of it is a hole."""
    return F.adaptive_max_pool2d(mask, like.shape[-2:])


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, mask: Tensor) -> Tensor:
    """Non-saturating logistic loss; only the patches of a fake that touch the hole are fake.

    Known regions of a composite are real pixels, so labelling them fake would teach the
    discriminator nonsense (LaMa's mask-aware labels do the same).
    """
    hole = resize_mask(mask, fake_logits)
    real = F.softplus(-real_logits).mean()
    fake = (F.softplus(fake_logits) * hole).sum() / (hole.sum() + EPS)
    return real + fake


def generator_adversarial_loss(fake_logits: Tensor, mask: Tensor) -> Tensor:
    """Non-saturating generator loss on the patches that touch the hole."""
    hole = resize_mask(mask, fake_logits)
    return (F.softplus(-fake_logits) * hole).sum() / (hole.sum() + EPS)


def feature_matching_loss(fake_feats: list[Tensor], real_feats: list[Tensor], mask: Tensor) -> Tensor:
    """L1 between discriminator features of the fill and of the real image, inside the hole."""
    total = fake_feats[0].new_zeros(())
    for fake, real in zip(fake_feats, real_feats, strict=True):
        total = total + masked_l1(fake, real.detach(), resize_mask(mask, fake))
    return total / len(fake_feats)


def psnr(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Per-image PSNR (dB) over the pixels where `weight` is set: (B,) tensor."""
    weight = weight.expand_as(pred)
    mse = ((pred - target) ** 2 * weight).flatten(1).sum(1) / (weight.flatten(1).sum(1) + EPS)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


__all__ = [
    "PatchDiscriminator",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "gradient_loss",
    "image_gradients",
    "masked_l1",
    "psnr",
    "resize_mask",
]
