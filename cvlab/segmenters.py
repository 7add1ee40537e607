"""Segmentation models (lesson 07): a small U-Net written out, and torchvision's LRASPP head on the
offline ImageNet MobileNetV2 backbone, optionally with a full-resolution refinement that sees the
image (the U-Net's last skip connection). All return logits (B, num_classes, H, W), the torchvision
ones as ``{"out": logits}``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from .pretrained import pretrained
from .segmentation import _logits
from .transfer import FrozenPrefix

__all__ = ["ImageRefinement", "UNet", "lraspp_mobilenet_v2"]


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015, arXiv:1505.04597): an encoder of ``depth``
    double-convolution blocks with max-pooling, a decoder with transposed convolutions, and skip
    connections that concatenate encoder features at each resolution.

    Args:
        in_channels: image channels (1 or 3).
        num_classes: output channels (logits per class).
        base: channels of the first block; each level doubles them.
        depth: how many times the image is halved; H and W must be divisible by 2**depth.

    Input float32 (B, in_channels, H, W); output logits (B, num_classes, H, W).

    Raises:
        ValueError: sizes < 1, or (in forward) H or W not divisible by 2**depth.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 11, base: int = 16, depth: int = 3):
        super().__init__()
        if min(in_channels, num_classes, base, depth) < 1:
            raise ValueError("in_channels, num_classes, base and depth must be positive")
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList([_double_conv(in_channels, widths[0])] +
                                  [_double_conv(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_double_conv(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = 2 ** self.depth
        if x.shape[-1] % step or x.shape[-2] % step:
            raise ValueError(f"U-Net of depth {self.depth} needs H and W divisible by {step}, got {tuple(x.shape[-2:])}: "
                             "resize or pad the images")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class _TwoLevels(nn.Module):
    """MobileNetV2 blocks returning the stride-8 (``low``) and stride-16 (``high``) features LRASPP reads."""

    def __init__(self, features: nn.Sequential, frozen: int):
        super().__init__()
        self.low, self.high = FrozenPrefix(features[:7], min(frozen, 7)), FrozenPrefix(features[7:14], max(0, frozen - 7))

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        low = self.low(x)
        return OrderedDict(low=low, high=self.high(low))


class ImageRefinement(nn.Module):
    """Sharpens a coarse segmenter at full resolution: two 3 x 3 convolutions read the image and
    the segmenter's upsampled logits side by side and add a correction to the logits. It is the
    idea of U-Net's last skip connection (Ronneberger et al. 2015) bolted onto a stride-8 head,
    whose bilinearly upsampled logits cannot follow a 1-pixel edge.

    Args:
        model: a segmenter returning logits (B, num_classes, H, W) or ``{"out": logits}``.
        num_classes: its number of classes.
        in_channels: image channels.
        channels: width of the refinement's hidden layer.

    Input float32 (B, in_channels, H, W); output ``{"out": logits}`` (B, num_classes, H, W).

    Raises:
        ValueError: sizes < 1.
    """

    def __init__(self, model: nn.Module, num_classes: int, *, in_channels: int = 3, channels: int = 8):
        super().__init__()
        if min(num_classes, in_channels, channels) < 1:
            raise ValueError(f"num_classes, in_channels and channels must be positive, got {num_classes}, {in_channels}, "
                             f"{channels}")
        self.model = model
        self.refine = nn.Sequential(
            nn.Conv2d(num_classes + in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True), nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        logits = _logits(self.model(x))
        return OrderedDict(out=logits + self.refine(torch.cat([logits, x], dim=1)))


def lraspp_mobilenet_v2(num_classes: int = 11, *, frozen_blocks: int = 4, inter_channels: int = 128,
                        refine_channels: int = 0, pretrained_backbone: bool = True) -> nn.Module:
    """torchvision's LRASPP head (Howard et al. 2019, "Searching for MobileNetV3", arXiv:1905.02244)
    on MobileNetV2's first 14 blocks with ImageNet weights (offline through ``cvlab.pretrained``):
    stride-8 features (32 channels) for detail, stride-16 features (96 channels) for context.

    Args:
        num_classes: classes including the background.
        frozen_blocks: MobileNetV2's first blocks kept frozen (weights and BatchNorm statistics).
        inter_channels: width of LRASPP's context branch.
        refine_channels: 0 for torchvision's LRASPP as it is; > 0 wraps it in ``ImageRefinement``
            of that width (sharp edges, about 1.5x the training time per epoch on a 2-core CPU).
        pretrained_backbone: False for random weights (tests, latency).

    Returns:
        a model taking float32 (B, 3, H, W), ImageNet-normalised, and returning ``{"out": logits}``
        with logits (B, num_classes, H, W) (upsampled bilinearly to the input size).

    Raises:
        ValueError: num_classes or inter_channels < 1, refine_channels < 0, frozen_blocks outside 0..14.
    """
    from torchvision.models import mobilenet_v2
    from torchvision.models.segmentation.lraspp import LRASPP

    if min(num_classes, inter_channels) < 1 or refine_channels < 0 or not 0 <= frozen_blocks <= 14:
        raise ValueError(f"need num_classes, inter_channels >= 1, refine_channels >= 0 and 0 <= frozen_blocks <= 14, "
                         f"got {num_classes}, {inter_channels}, {refine_channels}, {frozen_blocks}")
    net = pretrained("mobilenet_v2", "IMAGENET1K_V1", verbose=False)[0] if pretrained_backbone else mobilenet_v2()
    model = LRASPP(_TwoLevels(net.features, frozen_blocks), low_channels=32, high_channels=96,
                   num_classes=num_classes, inter_channels=inter_channels)
    return ImageRefinement(model, num_classes, channels=refine_channels) if refine_channels else model
