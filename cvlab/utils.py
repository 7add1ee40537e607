"""Small utilities every lesson needs: seeding, device choice, checkpoints, result lines.

Checkpoints follow torchvision's reference scripts (``references/classification/train.py``):
one dict holding the model's ``state_dict`` plus what is needed to rebuild and trust it. They are
written atomically (temporary file, then ``os.replace``) so an interrupted save never leaves a
half-written file in place of a good one, and read with ``torch.load(weights_only=True)`` so
loading a file runs no pickled code.
"""
from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "cpu_has_bf16",
    "sha256_file",
    "get_device",
    "key_result",
    "load_checkpoint",
    "save_checkpoint",
    "set_seed",
]


def set_seed(seed: int = 42) -> None:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and every CUDA device).

    Args:
        seed: any integer in [0, 2**32 - 1].

    Raises:
        ValueError: if ``seed`` is negative or not an integer.

    With the same seed, the same code on the same device and library versions gives the same
    numbers. Data loaders that shuffle keep their own generator (see ``cvlab.data``).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed))
    torch.manual_seed(int(seed))  # also seeds every CUDA device


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU.

    Args:
        prefer: force a device ("cpu", "cuda", "cuda:1", "mps"); None picks automatically.
            The environment variable ``CVLAB_DEVICE`` overrides the automatic choice.

    Returns:
        a ``torch.device``.

    Raises:
        ValueError: if the device asked for is not available on this machine.
    """
    prefer = prefer or os.environ.get("CVLAB_DEVICE") or None
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {prefer!r} asked for, but CUDA is not available here; "
                             "use 'cpu' or leave the device unset to pick automatically")
        if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {prefer!r} asked for, but Apple MPS is not available here; "
                             "use 'cpu' or leave the device unset to pick automatically")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """True when the CPU has bfloat16 instructions (AVX-512 BF16 or AMX), read from /proc/cpuinfo.

    Only there does ``torch.autocast("cpu", dtype=torch.bfloat16)`` speed training up; elsewhere the
    conversions make it slower. Returns False where /proc/cpuinfo does not exist (Windows, macOS).
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes as 64 hex digits, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def key_result(text: str) -> None:
    """Print a lesson's key result as one line starting with "Key result:".

    The headless course run (``python course.py --headless``) collects these lines and prints
    them beside each notebook's run time.
    """
    print(f"Key result: {text}")


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or belongs to another model."""


_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.device, torch.Size)


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError unless ``value`` is made only of types weights_only loading accepts."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, where)
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif type(value) not in _PLAIN and not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__name__}, which "
                        "torch.load(weights_only=True) cannot read back; convert it to a plain "
                        "int/float/str/list/dict or a tensor (e.g. float(x) for a NumPy number)")


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, *, arch: str | None = None,
                    model_kwargs: dict[str, Any] | None = None, class_names: list[str] | None = None,
                    metrics: dict[str, float] | None = None, **extra: Any) -> Path:
    """Save a model and what is needed to rebuild it, atomically.

    Args:
        path: file to write (conventionally ``*.pt``); parent folders are made.
        model: the model; its ``state_dict()`` is saved (tensors moved to CPU).
        arch: architecture name, as known to ``cvlab.models.build_model``; defaults to the
            model's class name.
        model_kwargs: the constructor arguments (plain ints, floats, strings) to rebuild it.
        class_names: the class name for each output logit, in order.
        metrics: numbers worth keeping with the weights, e.g. ``{"test_acc": 91.2}`` (%).
        **extra: any other entries made of tensors and plain Python values
            (e.g. ``optimizer=opt.state_dict()``, ``epoch=3``, ``history=[...]``).

    Returns:
        the path written.

    Raises:
        TypeError: an entry that ``torch.load(weights_only=True)`` could not read back (e.g. a
            NumPy number or a custom object); the message names the entry.

    The file is first written to a temporary file in the same folder, then moved over ``path``
    with ``os.replace``, which is atomic: a crash or interrupt mid-save leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "arch": arch or type(model).__name__,
        "model_kwargs": dict(model_kwargs or {}),
        "class_names": list(class_names) if class_names is not None else None,
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "torch_version": str(torch.__version__),
        **extra,
    }
    _check_plain(state, "checkpoint")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module | None = None, *,
                    arch: str | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` and, if given a model, load its weights.

    Args:
        path: the checkpoint file.
        model: a model to load the weights into (strictly: every key and shape must match).
        arch: the architecture expected; defaults to ``type(model).__name__`` when a model is given.
        map_location: where tensors go (default CPU; move the model afterwards).

    Returns:
        the checkpoint dict: ``arch``, ``model_kwargs``, ``class_names``, ``metrics``,
        ``state_dict`` and whatever extra entries were saved.

    Raises:
        CheckpointError: the file does not exist, is not a readable checkpoint (truncated,
            corrupt, or not made by ``save_checkpoint``), or holds another architecture or
            other tensor shapes than the model.

    Uses ``torch.load(weights_only=True)``: only tensors and plain Python values are read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train the model first (the lesson saves it "
                              "with cvlab.utils.save_checkpoint), or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}). The file may be truncated or "
                              "corrupt: delete it and save the model again.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "arch" not in ckpt:
        raise CheckpointError(f"{path} was not written by cvlab.utils.save_checkpoint (no 'arch' "
                              "and 'state_dict' entries); for a bare state_dict use "
                              "model.load_state_dict(torch.load(path, weights_only=True))")
    expected = arch or (type(model).__name__ if model is not None else None)
    if expected is not None and ckpt["arch"] != expected:
        raise CheckpointError(f"{path} holds a {ckpt['arch']!r} model, but a {expected!r} was "
                              f"expected: build a {ckpt['arch']} (cvlab.models.load_model(path) "
                              "does that for you) or pick the checkpoint of this model")
    if model is not None:
        own = model.state_dict()
        missing = sorted(set(own) - set(ckpt["state_dict"]))
        unexpected = sorted(set(ckpt["state_dict"]) - set(own))
        wrong = [k for k in own if k in ckpt["state_dict"] and own[k].shape != ckpt["state_dict"][k].shape]
        if missing or unexpected or wrong:
            detail = "; ".join(
                f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("other shape", wrong)) if keys)
            raise CheckpointError(f"{path} does not fit this {expected} ({detail}). It was saved "
                                  f"with model_kwargs={ckpt.get('model_kwargs')}: build the model "
                                  "with those arguments, or use cvlab.models.load_model(path)")
        model.load_state_dict(ckpt["state_dict"])
    return ckpt
