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

from .images import to_rgb

__all__ = ["AUGMENTATIONS", "AUGMENTATION_SPECS", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "IMAGENET_MEAN", "IMAGENET_STD", "ToRGB",
           "denormalize", "eval_transforms", "pretrained_transforms", "train_transforms"]

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


class ToRGB:
    """A transform: ``cvlab.images.to_rgb`` as a step in ``v2.Compose`` (picklable, so DataLoader
    workers can use it): any photo, grayscale or RGBA, as 3-channel RGB."""

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
                        f"got {weights!r}; cvlab.pretrained.pretrained returns one")
    return v2.Compose([ToRGB(), weights.transforms(**kwargs)])


# transform name -> (factory taking the parameters, {parameter: (min, max, step, default)}).
# Factories build the v2 transform with p=1 where torchvision has a probability, so
# ``cvlab.widgets.AugmentationExplorer`` always shows the effect; the random ones draw from
# torch's RNG, which the explorer seeds per call inside torch.random.fork_rng.
AUGMENTATION_SPECS: dict = {
    "RandomResizedCrop": (lambda min_scale: v2.RandomResizedCrop(224, scale=(min_scale, 1.0), antialias=True),
                          {"min_scale": (0.05, 1.0, 0.05, 0.3)}),
    "HorizontalFlip": (lambda: v2.RandomHorizontalFlip(p=1.0), {}),
    "RandomRotation": (lambda degrees: v2.RandomRotation((degrees, degrees)), {"degrees": (-180.0, 180.0, 5.0, 30.0)}),
    "RandomAffine": (lambda degrees, translate, scale, shear: v2.RandomAffine(
        degrees=degrees, translate=(translate, translate), scale=(scale, scale), shear=shear),
        {"degrees": (0.0, 90.0, 5.0, 15.0), "translate": (0.0, 0.5, 0.05, 0.1), "scale": (0.5, 1.5, 0.05, 1.0),
         "shear": (0.0, 45.0, 5.0, 10.0)}),
    "RandomPerspective": (lambda distortion_scale: v2.RandomPerspective(distortion_scale, p=1.0),
                          {"distortion_scale": (0.0, 1.0, 0.05, 0.5)}),
    "ElasticTransform": (lambda alpha, sigma: v2.ElasticTransform(alpha=alpha, sigma=sigma),
                         {"alpha": (0.0, 250.0, 10.0, 50.0), "sigma": (1.0, 10.0, 0.5, 5.0)}),
    "ColorJitter": (lambda brightness, contrast, saturation, hue: v2.ColorJitter(brightness, contrast, saturation, hue),
                    {"brightness": (0.0, 1.0, 0.05, 0.4), "contrast": (0.0, 1.0, 0.05, 0.4),
                     "saturation": (0.0, 1.0, 0.05, 0.4), "hue": (0.0, 0.5, 0.02, 0.1)}),
    "Grayscale": (lambda: v2.Grayscale(num_output_channels=3), {}),
    "RandomAutocontrast": (lambda: v2.RandomAutocontrast(p=1.0), {}),
    "RandomEqualize": (lambda: v2.RandomEqualize(p=1.0), {}),
    "RandomPosterize": (lambda bits: v2.RandomPosterize(int(bits), p=1.0), {"bits": (1, 8, 1, 3)}),
    "RandomSolarize": (lambda threshold: v2.RandomSolarize(threshold, p=1.0), {"threshold": (0, 255, 5, 128)}),
    "RandomAdjustSharpness": (lambda sharpness_factor: v2.RandomAdjustSharpness(sharpness_factor, p=1.0),
                              {"sharpness_factor": (0.0, 10.0, 0.5, 4.0)}),
    "GaussianBlur": (lambda sigma: v2.GaussianBlur(kernel_size=2 * int(3 * sigma) + 1, sigma=sigma),
                     {"sigma": (0.5, 8.0, 0.5, 2.0)}),
    "RandomErasing": (lambda max_area: v2.Compose([v2.ToDtype(torch.float32, scale=True),
                                                   v2.RandomErasing(p=1.0, scale=(0.02, max_area), value=0),
                                                   v2.ToDtype(torch.uint8, scale=True)]),
                      {"max_area": (0.02, 0.5, 0.02, 0.2)}),
    "AutoAugment": (lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET), {}),
    "RandAugment": (lambda num_ops, magnitude: v2.RandAugment(num_ops=int(num_ops), magnitude=int(magnitude)),
                    {"num_ops": (1, 5, 1, 2), "magnitude": (0, 30, 1, 9)}),
    "TrivialAugmentWide": (lambda: v2.TrivialAugmentWide(), {}),
    "AugMix": (lambda severity: v2.AugMix(severity=int(severity)), {"severity": (1, 10, 1, 3)}),
}
