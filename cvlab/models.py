"""Models for the lessons, from a linear baseline to a compact modern CNN.

All take images as float32 (B, C, H, W) and return logits, float32 (B, num_classes): raw scores
before softmax. None ends in an activation: ``nn.CrossEntropyLoss`` applies log-softmax itself,
and a ReLU on the logits would clip every negative score to 0 and hurt accuracy.

* ``LinearModel`` ("model_0"): Flatten + one Linear layer, multinomial logistic regression.
* ``MLP`` ("model_1"): Flatten + Linear + ReLU + Linear, one hidden layer.
* ``TinyVGG``: the CNN Explainer architecture (Wang et al., 2020, arXiv:2004.15004), two
  VGG-style blocks (Simonyan and Zisserman, 2014, arXiv:1409.1556) of conv-ReLU-conv-ReLU-maxpool.
* ``CompactCNN``: three conv-BatchNorm-ReLU-maxpool blocks (BatchNorm: Ioffe and Szegedy, 2015,
  arXiv:1502.03167) of widths 16-32-64; ~92 % on Fashion-MNIST in 3 CPU epochs.

Pretrained torchvision models live in ``cvlab.pretrained``; adapting them (new head, freezing,
feature caching) in ``cvlab.transfer``.
"""
from __future__ import annotations

import difflib
import math
import os
from typing import Any

import torch
from torch import nn

from .checkpoints import CheckpointError, _check_and_load, load_checkpoint

__all__ = ["MODELS", "TORCHVISION_MODELS", "CompactCNN", "LinearModel", "MLP", "TinyVGG", "build_model", "count_parameters", "find_layer",
           "load_model"]



def _flat_size_error(model: nn.Module, x: torch.Tensor, in_features: int) -> ValueError:
    """The error for an input whose C*H*W is not the ``in_features`` a Flatten + Linear model takes."""
    example = next((f" e.g. ({c}, {s}, {s})," for c in (1, 3) for s in [round((in_features / c) ** 0.5)]
                    if in_features % c == 0 and c * s * s == in_features), "")
    if x.ndim < 2:
        return ValueError(f"{type(model).__name__}(in_features={in_features}) takes a batch (B, C, H, W) of "
                          f"images with C*H*W = {in_features} values each,{example} got shape {tuple(x.shape)}: "
                          "add a batch axis with x[None] (or x.unsqueeze(0))")
    got = tuple(x.shape[1:])
    return ValueError(
        f"{type(model).__name__}(in_features={in_features}) takes images (B, C, H, W) with C*H*W = {in_features} "
        f"values each,{example} got (C, H, W) = {got} with {math.prod(got):,} values (input shape {tuple(x.shape)}). "
        f"Resize the images (v2.Resize), or build the model with in_features={math.prod(got)}.")


def _check_image_size(model: nn.Module, x: torch.Tensor, channels: int, image_size: int, blocks: int,
                      flat_side: int) -> None:
    """Raise a ValueError naming the (C, H, W) a conv model takes, unless ``x`` is a batch it can take.

    A model of ``blocks`` max-pooling layers (each halves H and W, rounding down) and a Linear
    layer sized for ``flat_side`` x ``flat_side`` maps takes exactly the inputs with ``channels``
    channels and (H // 2**blocks) * (W // 2**blocks) == flat_side**2: one shape comparison, cheap.
    """
    if not isinstance(x, torch.Tensor):  # torch.fx tracing passes proxies: leave the graph alone
        return
    f = 2 ** blocks
    if x.ndim == 4 and x.shape[1] == channels and (x.shape[2] // f) * (x.shape[3] // f) == flat_side * flat_side:
        return
    name = f"{type(model).__name__}(in_channels={channels}, image_size={image_size})"
    want = f"({channels}, {image_size}, {image_size})"
    if x.ndim == 3 and x.shape[0] == channels:
        raise ValueError(f"{name} takes a batch (B, C, H, W) of images {want}; got one image {tuple(x.shape)}: "
                         "add a batch axis with x[None] (or x.unsqueeze(0))")
    if x.ndim != 4:
        raise ValueError(f"{name} takes a batch (B, C, H, W) of images {want}; got shape {tuple(x.shape)}")
    c, h, w = x.shape[1:]
    fixes = []
    if c != channels:
        fixes.append("convert them to grayscale (v2.Grayscale())" if channels == 1 else
                     "repeat the gray channel (cvlab.images.to_rgb)" if channels == 3 and c == 1 else
                     f"give images with {channels} channels")
    if (h // f) * (w // f) != flat_side * flat_side:
        small = f" ({min(h, w)} px is too small for its {blocks} max-pooling layers, which each halve the size)" \
            if min(h, w) < f else ""
        fixes.append(f"resize them to {image_size}x{image_size} (v2.Resize(({image_size}, {image_size}))){small}")
    rebuild = ", ".join(([f"in_channels={c}"] if c != channels else [])
                        + ([f"image_size={h}"] if h == w and h >= f and (h // f) * (w // f) != flat_side ** 2 else []))
    fix = " and ".join(fixes)
    raise ValueError(f"{name} takes images (C, H, W) = {want}; got {(c, h, w)}. " + fix[0].upper() + fix[1:]
                     + (f", or build the model with {rebuild}" if rebuild else "") + ".")



class LinearModel(nn.Module):
    """model_0: Flatten + Linear. The baseline every other model must beat.

    Args:
        in_features: pixels per image, C*H*W (784 for 1x28x28).
        num_classes: number of output logits.

    Shapes: (B, C, H, W) float32 -> logits (B, num_classes) float32.

    Raises:
        ValueError: (when called) images whose C*H*W is not ``in_features``; the message gives
            the size it takes and the size it got.
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__()
        self.in_features = in_features
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and (x.ndim < 2 or math.prod(x.shape[1:]) != self.in_features):
            raise _flat_size_error(self, x, self.in_features)
        return self.linear(self.flatten(x))



class MLP(nn.Module):
    """model_1: Flatten + Linear + ReLU + Linear (the non-linearity between layers, not after).

    Args:
        in_features: pixels per image, C*H*W (784 for 1x28x28).
        hidden_units: width of the hidden layer.
        num_classes: number of output logits.

    Shapes: (B, C, H, W) float32 -> logits (B, num_classes) float32.

    Raises:
        ValueError: (when called) images whose C*H*W is not ``in_features``; the message gives
            the size it takes and the size it got.
    """

    def __init__(self, in_features: int = 784, hidden_units: int = 128, num_classes: int = 10):
        super().__init__()
        self.in_features = in_features
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and (x.ndim < 2 or math.prod(x.shape[1:]) != self.in_features):
            raise _flat_size_error(self, x, self.in_features)
        return self.layers(x)



class TinyVGG(nn.Module):
    """TinyVGG from CNN Explainer: 2 x (conv3x3-ReLU-conv3x3-ReLU-maxpool2) + Linear.

    Args:
        in_channels: 1 for grayscale, 3 for RGB.
        hidden_units: channels of every conv layer.
        num_classes: number of output logits.
        image_size: height = width of the input in pixels (each block halves it).

    Shapes: (B, in_channels, image_size, image_size) float32 -> logits (B, num_classes).

    Raises:
        ValueError: (when called) images of another channel count or size, or too small for
            the two max-pooling layers; the message gives the (C, H, W) it takes and the one it got.
    """

    def __init__(self, in_channels: int = 1, hidden_units: int = 10, num_classes: int = 10,
                 image_size: int = 28):
        super().__init__()
        self.in_channels, self.image_size = in_channels, image_size

        def block(c_in: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, hidden_units, kernel_size=3, padding=1), nn.ReLU(),
                nn.Conv2d(hidden_units, hidden_units, kernel_size=3, padding=1), nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.block_1 = block(in_channels)
        self.block_2 = block(hidden_units)
        side = image_size // 2 // 2
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden_units * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image_size(self, x, self.in_channels, self.image_size, 2, self.image_size // 4)
        return self.classifier(self.block_2(self.block_1(x)))



class CompactCNN(nn.Module):
    """A compact modern CNN: blocks of conv3x3-BatchNorm-ReLU-maxpool2, then one Linear layer.

    Args:
        in_channels: 1 for grayscale, 3 for RGB.
        num_classes: number of output logits.
        widths: output channels of each block; each block halves height and width.
        image_size: height = width of the input in pixels (28 for Fashion-MNIST).
        dropout: dropout probability before the Linear layer (0 disables it).
        batch_norm: False replaces each BatchNorm by nothing (and gives the convolutions a
            bias instead), for ablations.

    Shapes: (B, in_channels, image_size, image_size) float32 -> logits (B, num_classes).
    With the defaults: 29,178 parameters, ~91-92 % Fashion-MNIST test accuracy after 3 epochs
    of AdamW with a one-cycle schedule (Smith and Topin, 2017, arXiv:1708.07120).

    Raises:
        ValueError: ``image_size`` too small for that many blocks; when called, images of another
            channel count or size, or too small for the max-pooling layers (the message gives
            the (C, H, W) it takes and the one it got).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 widths: tuple[int, ...] | list[int] = (16, 32, 64), image_size: int = 28,
                 dropout: float = 0.0, batch_norm: bool = True):
        super().__init__()
        side = image_size // 2 ** len(widths)
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for {len(widths)} blocks that "
                             f"each halve it; use at least {2 ** len(widths)} pixels or fewer widths")
        self.in_channels, self.image_size, self._blocks = in_channels, image_size, len(widths)
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in widths:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm),
                       nn.BatchNorm2d(c_out) if batch_norm else nn.Identity(), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.image_size // 2 ** self._blocks
        _check_image_size(self, x, self.in_channels, self.image_size, self._blocks, side)
        return self.classifier(self.features(x))


#: architecture name (as stored in checkpoints) -> class
MODELS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (LinearModel, MLP, TinyVGG, CompactCNN)}

#: torchvision architectures ``cvlab train`` fine-tunes from ImageNet weights (``cvlab.backbones``); rebuilt here
#: without weights (``torchvision.models.get_model(name, weights=None, num_classes=...)``), then loaded
TORCHVISION_MODELS = ("mobilenet_v2",)



def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build a model by architecture name ("LinearModel", "MLP", "TinyVGG", "CompactCNN", or one of
    ``TORCHVISION_MODELS``: torchvision's architecture with fresh weights, e.g. to load a checkpoint into).

    Args:
        arch: the class name; "model_0" and "model_1" are accepted for the first two.
        **kwargs: constructor arguments (e.g. ``num_classes=10``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    arch = {"model_0": "LinearModel", "model_1": "MLP"}.get(arch, arch)
    if arch in TORCHVISION_MODELS:
        from torchvision.models import get_model
        return get_model(arch, weights=None, **kwargs)
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(MODELS) + list(TORCHVISION_MODELS)}")
    if "widths" in kwargs:
        kwargs["widths"] = tuple(kwargs["widths"])
    return MODELS[arch](**kwargs)



def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint holds and load its weights.

    Args:
        path: a checkpoint written by ``cvlab.checkpoints.save_checkpoint`` for a model in ``MODELS`` or
            ``TORCHVISION_MODELS`` (``cvlab train --model mobilenet_v2``).
        map_location: where the tensors go.

    Returns:
        ``(model, checkpoint)``: the model in eval mode, and the checkpoint dict (class names,
        metrics, ...).

    Raises:
        CheckpointError: missing or corrupt file, or an architecture cvlab does not know.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    if ckpt["arch"] not in MODELS and ckpt["arch"] not in TORCHVISION_MODELS:
        raise CheckpointError(f"{path} holds a {ckpt['arch']!r} model, which cvlab.models does not "
                              f"build ({sorted(MODELS) + list(TORCHVISION_MODELS)}); build it yourself and call "
                              "cvlab.checkpoints.load_checkpoint(path, model)")
    model = build_model(ckpt["arch"], **ckpt.get("model_kwargs", {}))
    _check_and_load(ckpt, model, path, ckpt["arch"])  # the checkpoint read above, not a second read
    return model.eval(), ckpt



def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) in a model; only those with ``requires_grad`` if asked."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)



def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (as in ``model.named_modules()``, e.g. "features.18").

    Raises:
        ValueError: no such layer; the message lists the nearest names.
    """
    modules = dict(model.named_modules())
    if name not in modules:
        near = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.4)
        raise ValueError(f"{type(model).__name__} has no layer {name!r}; nearest: {near or list(modules)[1:6]} "
                         "(list them all with [n for n, _ in model.named_modules()])")
    return modules[name]
