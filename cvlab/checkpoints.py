"""Checkpoints: save and load a model with what is needed to rebuild and trust it.

Checkpoints follow torchvision's reference scripts (``references/classification/train.py``):
one dict holding the model's ``state_dict`` plus what is needed to rebuild it (architecture name,
constructor arguments, class names, metrics) and, for a training state, the optimizer, scheduler,
epoch and every random state. They are written atomically (temporary file, then ``os.replace``)
so an interrupted save never leaves a half-written file in place of a good one, and read with
``torch.load(weights_only=True)`` so loading a file runs no pickled code.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointError", "load_checkpoint", "load_training_state", "rng_state", "save_checkpoint",
           "save_training_state", "set_rng_state"]



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
                              "with cvlab.checkpoints.save_checkpoint), or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}). The file may be truncated or "
                              "corrupt: delete it and save the model again.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "arch" not in ckpt:
        raise CheckpointError(f"{path} was not written by cvlab.checkpoints.save_checkpoint (no 'arch' "
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



def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The generators that decide a loader's order: its own, and its sampler's."""
    found = []
    for obj in (loader, getattr(loader, "sampler", None)):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found



def rng_state(train_loader: Any = None) -> dict[str, Any]:
    """Every random state that decides what happens next, as plain values and tensors.

    Args:
        train_loader: a loader whose own generators (its ``generator`` and its sampler's) are
            saved too, so a resumed run shuffles as the uninterrupted one would.

    Returns:
        a dict with the states of torch (CPU and CUDA), NumPy, Python's ``random`` and the
        loader, which ``save_checkpoint`` can store and ``set_rng_state`` restores.
    """
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    generators = _loader_generators(train_loader)
    if generators:
        state["loader"] = [g.get_state() for g in generators]
    return state



def set_rng_state(state: dict[str, Any], train_loader: Any = None) -> None:
    """Restore the random states saved by ``rng_state`` (the loader's too, if given)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generators = _loader_generators(train_loader)
    for g, s in zip(generators, state.get("loader", [])):
        g.set_state(s)


def save_training_state(path: str | os.PathLike, model: torch.nn.Module, *, epoch: int,
                        optimizer: torch.optim.Optimizer, scheduler: Any = None, scaler: Any = None,
                        history: list[dict[str, float]] | None = None, train_loader: Any = None,
                        **extra: Any) -> Path:
    """Save everything needed to continue training exactly where it stopped (``last.pt``).

    The checkpoint of ``save_checkpoint`` plus the optimizer's, scheduler's and gradient
    scaler's ``state_dict``, the finished ``epoch`` (1-based), the ``history`` records and every
    random state (``rng_state``), as torchvision's reference scripts save for ``--resume``.

    Args:
        path: the file to write, atomically.
        model, optimizer, scheduler, scaler: their states are saved (None entries for absent parts).
        epoch: the last finished epoch.
        history: the per-epoch records so far.
        train_loader: its shuffling generators are saved too.
        **extra: as ``save_checkpoint`` (``arch``, ``model_kwargs``, ``class_names``, ``metrics``...).

    Returns:
        the path written.

    Raises:
        TypeError: as ``save_checkpoint``.
    """
    return save_checkpoint(path, model, epoch=int(epoch), optimizer=optimizer.state_dict(),
                           scheduler=scheduler.state_dict() if scheduler is not None else None,
                           scaler=scaler.state_dict() if scaler is not None else None,
                           history=list(history or []), rng=rng_state(train_loader), **extra)


def load_training_state(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                        scheduler: Any = None, scaler: Any = None, train_loader: Any = None,
                        arch: str | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Restore a state written by ``save_training_state`` into the given objects.

    Loads the model's weights, the optimizer's, scheduler's and scaler's states (where both the
    object and the saved state exist) and every random state, including ``train_loader``'s.

    Returns:
        the checkpoint dict (``epoch``, ``history`` and any extra entries).

    Raises:
        CheckpointError: as ``load_checkpoint``, or a checkpoint that holds weights only.
    """
    state = load_checkpoint(path, model, arch=arch, map_location=map_location)
    if "optimizer" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} holds weights only, not a training state; resume from "
                              "the last.pt that fit(checkpoint_dir=...) writes")
    optimizer.load_state_dict(state["optimizer"])
    for part, saved in ((scheduler, state.get("scheduler")), (scaler, state.get("scaler"))):
        if part is not None and saved is not None:
            part.load_state_dict(saved)
    set_rng_state(state["rng"], train_loader)
    return state
