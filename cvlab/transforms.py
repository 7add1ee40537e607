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

__all__ = ["AUGMENTATIONS", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "IMAGENET_MEAN", "IMAGENET_STD", "ToRGB",
           "denormalize", "eval_transforms", "pretrained_transforms", "to_rgb", "train_transforms"]

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


def to_rgb(image):
    """Any photo as 3-channel RGB, as ImageNet-pretrained models expect.

    Grayscale is repeated into three channels; an alpha channel is composited over white (a
    transparent pixel becomes white, not the black that dropping alpha often gives).

    Args:
        image: a PIL image of any mode (L, LA, P, RGBA, CMYK, I;16, ...), or a uint8 or float
            tensor (C, H, W) / (B, C, H, W) with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or
            4 (RGBA), or (H, W) (gray). Float values are taken to be in [0, 1].

    Returns:
        the same kind: a PIL image in mode "RGB", or a tensor of the same dtype with C = 3
        ((3, H, W) for a (H, W) input).

    Raises:
        TypeError: neither a PIL image nor a tensor.
        ValueError: a tensor whose channel axis (-3) is not 1-4 long.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode == "RGB":
            return image
        from .data import to_8_bits
        image = to_8_bits(image)  # 16-bit gray: scaled to 8 bits, not clipped
        if "A" in image.getbands() or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a PIL image or a tensor (C, H, W), got {type(image).__name__}")
    x = image[None] if image.ndim == 2 else image
    c = x.shape[-3] if x.ndim >= 3 else 0
    if x.ndim > 4 or c not in (1, 2, 3, 4):
        raise ValueError(f"expected an image tensor (C, H, W) or (B, C, H, W) with 1-4 channels in axis -3, got "
                         f"shape {tuple(image.shape)}; a (H, W, C) array from NumPy/PIL needs .permute(2, 0, 1)")
    if c == 3:
        return x
    if c == 1:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).clone()
    color, alpha = x.narrow(-3, 0, c - 1), x.narrow(-3, c - 1, 1)
    white = 255.0 if x.dtype == torch.uint8 else 1.0
    a = alpha.float() / white
    out = color.float() * a + white * (1 - a)
    out = out.expand(*out.shape[:-3], 3, *out.shape[-2:])
    return out.round().to(torch.uint8) if x.dtype == torch.uint8 else out.to(x.dtype).contiguous()


class ToRGB:
    """A transform: ``to_rgb`` as a step in ``v2.Compose`` (picklable, so DataLoader workers can use it)."""

    def __call__(self, image):
        return to_rgb(image)

    def __repr__(self) -> str:
        return "ToRGB()"


def pretrained_transforms(weights, **kwargs) -> v2.Compose:
    """The preprocessing a pretrained model expects, for photos of any mode.

    ``ToRGB()`` followed by ``weights.transforms(**kwargs)`` (torchvision's own resize, centre
    crop, scale to [0, 1] and normalisation with the weights' ImageNet mean and std).

    Args:
        weights: a torchvision weights enum member, e.g. ``MobileNet_V2_Weights.IMAGENET1K_V1``.
        **kwargs: passed to ``weights.transforms``, e.g. ``crop_size=96, resize_size=96``
            (pixels) for small, fast inputs.

    Returns:
        a callable: PIL image or uint8/float tensor (C, H, W) / (B, C, H, W) with C = 1-4 ->
        float32 (3, crop, crop) / (B, 3, crop, crop), normalised.

    Raises:
        TypeError: ``weights`` is not a torchvision weights enum member.
    """
    if not callable(getattr(weights, "transforms", None)) or not hasattr(weights, "meta"):
        raise TypeError(f"weights must be a torchvision weights enum member (e.g. MobileNet_V2_Weights.IMAGENET1K_V1), "
                        f"got {weights!r}; cvlab.models.pretrained returns one")
    return v2.Compose([ToRGB(), weights.transforms(**kwargs)])
