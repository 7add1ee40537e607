"""Transform presets built from torchvision's ``transforms.v2``.

The order every pipeline here follows: geometry on the uint8 image (resize, crop, flip,
automatic augmentation) -> to a float tensor in [0, 1] -> normalise -> random erasing (which
works on the normalised tensor). Geometric and colour transforms are cheaper and exact on uint8;
``Normalize`` needs floats. ``v2`` transforms take PIL images or tensors, and move bounding
boxes and masks (``torchvision.tv_tensors``) together with the image.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms import v2

__all__ = ["AUGMENTATIONS", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "IMAGENET_MEAN", "IMAGENET_STD",
           "denormalize", "eval_transforms", "train_transforms"]

#: mean and standard deviation of Fashion-MNIST's training pixels in [0, 1] (computed in lesson 03)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
#: the ImageNet statistics torchvision's pretrained weights expect
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: augmentation presets for ``train_transforms``
AUGMENTATIONS = ("none", "flip", "basic", "trivialaugment", "randaugment", "autoaugment")


def _check(image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer (pixels), got {image_size!r}")
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise ValueError(f"mean and std need one value per channel (1 or 3), got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {tuple(std)}")


def train_transforms(image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                     augment: str = "basic", erasing: float = 0.0, channels: int | None = None) -> v2.Compose:
    """A training pipeline: augmentation, then float conversion and normalisation.

    Args:
        image_size: output height = width, in pixels.
        mean, std: per-channel normalisation (1 or 3 values); the output is (x - mean) / std.
        augment: one of ``AUGMENTATIONS``: "none" (resize only), "flip" (horizontal flips),
            "basic" (RandomResizedCrop with scale 0.7-1 + flips), "trivialaugment"
            (TrivialAugmentWide, Müller and Hutter 2021), "randaugment" (Cubuk et al. 2020) or
            "autoaugment" (ImageNet policy, Cubuk et al. 2019), the last three after "basic".
        erasing: probability of RandomErasing (Zhong et al. 2020) per image, 0 to disable.
        channels: force 1 (grayscale) or 3 (RGB, grayscale repeated) channels; None keeps them.

    Returns:
        a ``v2.Compose`` mapping a PIL image or uint8 tensor (C, H, W) to float32
        (C, image_size, image_size), normalised.

    Raises:
        ValueError: an unknown preset, a bad size, mismatched mean/std, or erasing outside [0, 1].
    """
    _check(image_size, mean, std)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if not 0.0 <= erasing <= 1.0:
        raise ValueError(f"erasing is a probability in [0, 1], got {erasing}")
    steps: list = [v2.ToImage()]
    if channels is not None:
        steps.append(v2.Grayscale(num_output_channels=channels) if channels == 1 else v2.RGB())
    if augment in ("none", "flip"):
        steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    else:
        steps.append(v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), antialias=True))
    if augment != "none":
        steps.append(v2.RandomHorizontalFlip())
    steps += {"trivialaugment": [v2.TrivialAugmentWide()], "randaugment": [v2.RandAugment()],
              "autoaugment": [v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)]}.get(augment, [])
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if erasing > 0:
        steps.append(v2.RandomErasing(p=erasing, value=0))
    return v2.Compose(steps)


def eval_transforms(image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    resize_ratio: float = 1.0, channels: int | None = None) -> v2.Compose:
    """The evaluation pipeline matching ``train_transforms``: deterministic, no augmentation.

    Args:
        image_size: output height = width, in pixels.
        mean, std: as in ``train_transforms``.
        resize_ratio: resize the short side to ``image_size / resize_ratio`` before the centre
            crop (ImageNet models use 0.875: 256 -> 224); 1.0 resizes straight to the size.
        channels: as in ``train_transforms``.

    Returns:
        a ``v2.Compose`` mapping a PIL image or uint8 tensor to float32 (C, image_size, image_size).
    """
    _check(image_size, mean, std)
    if not 0 < resize_ratio <= 1:
        raise ValueError(f"resize_ratio must be in (0, 1], got {resize_ratio}")
    steps: list = [v2.ToImage()]
    if channels is not None:
        steps.append(v2.Grayscale(num_output_channels=channels) if channels == 1 else v2.RGB())
    steps += [v2.Resize(round(image_size / resize_ratio), antialias=True), v2.CenterCrop(image_size),
              v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def denormalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Undo ``Normalize`` for display: ``x * std + mean``, clipped to [0, 1].

    Args:
        x: float (C, H, W) or (N, C, H, W) with C = len(mean).

    Raises:
        ValueError: the channel count does not match mean/std.
    """
    c = x.shape[-3] if x.ndim >= 3 else -1
    if c != len(mean) or len(mean) != len(std):
        raise ValueError(f"expected {len(mean)} channels in axis -3, got shape {tuple(x.shape)}")
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * s + m).clamp(0, 1)
