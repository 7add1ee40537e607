"""Semantic segmentation: masks as data, models, losses and metrics (lesson 07).

A semantic mask is an int64 (H, W) tensor of class indices, 0 the background, ``IGNORE_INDEX``
(255) for pixels that count for nothing (unlabelled borders, padding). Models return logits
(B, num_classes, H, W), or torchvision's dict ``{"out": logits}``. Metrics come from torchmetrics
(``MulticlassJaccardIndex`` for IoU, as the course's rules ask); lesson 07 writes the confusion
matrix and IoU from scratch and checks them against it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from .pretrained import pretrained
from .transfer import FrozenPrefix
from .utils import get_device, model_mode, progress_bar

__all__ = ["IGNORE_INDEX", "UNet", "check_mask", "dice_loss", "evaluate", "lraspp_mobilenet_v2", "semantic_mask",
           "train_one_epoch"]

#: mask value for pixels that no loss or metric counts
IGNORE_INDEX = 255


def check_mask(mask: torch.Tensor, image_size: tuple[int, int], num_classes: int, *,
               ignore_index: int = IGNORE_INDEX, where: str = "the mask") -> None:
    """Check a semantic mask against its image and the classes.

    Raises:
        TypeError: not a tensor.
        ValueError: a float mask (class indices are integers), a 3-channel or other non-(H, W)
            mask, another size than the image (resize masks with nearest-neighbour interpolation,
            which ``transforms.v2`` does for ``tv_tensors.Mask``), or values outside
            [0, num_classes) other than ``ignore_index``. Each message says how to fix it.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{where} must be a tensor (H, W) of class indices, got {type(mask).__name__}")
    if mask.is_floating_point():
        raise ValueError(f"{where} is {mask.dtype}: masks hold class indices, convert with mask.long() (and never "
                         "resize a mask bilinearly: that invents classes between two others)")
    if mask.dim() == 3 and mask.shape[0] in (1, 3):
        hint = "mask[0]" if mask.shape[0] == 1 else "a palette lookup (a colour per class) or mask[0] for a gray mask"
        raise ValueError(f"{where} has shape {tuple(mask.shape)}: a semantic mask is (H, W); use {hint}")
    if mask.dim() != 2:
        raise ValueError(f"{where} must be (H, W), got shape {tuple(mask.shape)}")
    if tuple(mask.shape) != tuple(image_size):
        raise ValueError(f"{where} is {tuple(mask.shape)} but its image is {tuple(image_size)} (H, W): resize both with "
                         "transforms.v2 (masks as tv_tensors.Mask are resized with nearest-neighbour interpolation)")
    bad = ((mask < 0) | (mask >= num_classes)) & (mask != ignore_index)
    if bad.any():
        values = sorted(set(mask[bad].unique().tolist()))[:5]
        raise ValueError(f"{where} holds {values}, outside 0..{num_classes - 1} and not the ignore index "
                         f"{ignore_index}: give every pixel a class index (0 = background) or the ignore index")


def semantic_mask(target: dict, image_size: tuple[int, int]) -> torch.Tensor:
    """A scene's class map from its instance masks: int64 (H, W), 0 the background and each
    object's pixels its label (``cvlab.scenes`` targets: ``masks`` (K, H, W) bool, ``labels`` (K,))."""
    out = torch.zeros(image_size, dtype=torch.int64)
    for m, label in zip(target["masks"], target["labels"].tolist()):
        out[m.bool()] = label
    return out


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


def lraspp_mobilenet_v2(num_classes: int = 11, *, frozen_blocks: int = 4, inter_channels: int = 128,
                        pretrained_backbone: bool = True) -> nn.Module:
    """torchvision's LRASPP head (Howard et al. 2019, "Searching for MobileNetV3", arXiv:1905.02244)
    on MobileNetV2's first 14 blocks with ImageNet weights (offline through ``cvlab.pretrained``):
    stride-8 features (32 channels) for detail, stride-16 features (96 channels) for context.

    Returns:
        a model taking float32 (B, 3, H, W), ImageNet-normalised, and returning ``{"out": logits}``
        with logits (B, num_classes, H, W) (upsampled bilinearly to the input size).

    Raises:
        ValueError: num_classes or inter_channels < 1, frozen_blocks outside 0..14.
    """
    from torchvision.models import mobilenet_v2
    from torchvision.models.segmentation.lraspp import LRASPP

    if min(num_classes, inter_channels) < 1 or not 0 <= frozen_blocks <= 14:
        raise ValueError(f"need num_classes, inter_channels >= 1 and 0 <= frozen_blocks <= 14, got {num_classes}, "
                         f"{inter_channels}, {frozen_blocks}")
    net = pretrained("mobilenet_v2", "IMAGENET1K_V1", verbose=False)[0] if pretrained_backbone else mobilenet_v2()
    return LRASPP(_TwoLevels(net.features, frozen_blocks), low_channels=32, high_channels=96,
                  num_classes=num_classes, inter_channels=inter_channels)


def _logits(output: Any) -> torch.Tensor:
    return output["out"] if isinstance(output, dict) else output


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = IGNORE_INDEX,
              smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss (Milletari et al. 2016, V-Net, arXiv:1606.04797), averaged over classes:
    1 - mean_c (2 |P_c ∩ T_c| + smooth) / (|P_c| + |T_c| + smooth) with P the softmax probabilities.

    Args:
        logits: float (B, C, H, W).
        target: int64 (B, H, W) class indices; ``ignore_index`` pixels are left out.
        smooth: added to numerator and denominator (a class absent from both scores 1).

    Returns:
        a scalar in [0, 1].
    """
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * valid
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + smooth) / (total + smooth)).mean()


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, loss_fn,
                    device: torch.device | str | None = None, *, scheduler: Any = None,
                    progress: bool = False) -> float:
    """One pass over ``loader`` of ``(images, masks)`` batches (float32 (B, C, H, W), int64 (B, H, W)).

    Returns:
        the mean loss per batch; the model's mode is restored.

    Raises:
        ValueError: no batches. FloatingPointError: a NaN or infinite loss (lower the learning rate).
    """
    device = get_device(device)
    total, batches = 0.0, 0
    with model_mode(model.to(device), True):
        for images, masks in progress_bar(loader, desc="train", enabled=progress):
            loss = loss_fn(_logits(model(images.to(device))), masks.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} in batch {batches + 1}: lower the learning rate")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total, batches = total + loss.item(), batches + 1
    if batches == 0:
        raise ValueError("the loader yielded no batches")
    return total / batches


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device | str | None = None, *,
             ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """Pixel accuracy, per-class IoU and mIoU with torchmetrics (``MulticlassJaccardIndex``,
    ``MulticlassAccuracy``; ``ignore_index`` pixels left out).

    Returns:
        ``miou`` and ``pixel_acc`` (floats in [0, 1]) and ``iou_per_class`` (list of num_classes
        floats; NaN for a class absent from both truth and prediction); the model's mode is restored.

    Raises:
        ValueError: no batches.
    """
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    device = get_device(device)
    iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=ignore_index, zero_division=float("nan"))
    acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index)
    batches = 0
    with model_mode(model.to(device), False):
        for images, masks in loader:
            pred = _logits(model(images.to(device))).argmax(1).cpu()
            iou.update(pred, masks)
            acc.update(pred, masks)
            batches += 1
    if batches == 0:
        raise ValueError("the loader yielded no batches")
    per_class = iou.compute()
    return {"miou": float(per_class.nanmean()), "pixel_acc": float(acc.compute()), "iou_per_class": per_class.tolist()}
