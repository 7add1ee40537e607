"""Checkpoints: save and load a model with what is needed to rebuild and trust it.

Checkpoints follow torchvision's reference scripts (``references/classification/train.py``):
one dict holding the model's ``state_dict`` plus what is needed to rebuild it (architecture name,
constructor arguments, class names, metrics) and, for a training state, the optimizer, scheduler,
epoch and every random state. They are written atomically (temporary file, then ``os.replace``)
so an interrupted save (or a full disk) never leaves a half-written file in place of a good one,
with the permissions of any file the user writes (0666 minus the umask), and read with
``torch.load(weights_only=True)`` so loading a file runs no pickled code. A training state also
records the optimizer's and scheduler's types and settings (``optimizer_config``,
``scheduler_config``), so that resuming with other ones is refused with what differs.
"""
from __future__ import annotations

import collections
import errno
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .utils import chmod_as_user_file

__all__ = ["CheckpointError", "config_differences", "load_checkpoint", "load_training_state", "optimizer_config",
           "rng_state", "save_checkpoint", "save_training_state", "scheduler_config", "set_rng_state"]



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
        OSError: the file could not be written; for a full disk (ENOSPC) the message names the
            file and says the previous one is intact.

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
        chmod_as_user_file(fd)
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is intact" if path.exists() else f"nothing was written to {path}"
            raise OSError(exc.errno, f"no space left to save {path} ({kept}): free some disk space or "
                                     "choose another checkpoint folder, then save again") from exc
        raise
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
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): a save was cut short before it began, or the file "
                              "was created by hand. Delete it and save (or train) the model again.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "GLOBAL" in message:  # "Unsupported global: GLOBAL x.y", "unsupported GLOBAL x.y ... blocked"
            raise CheckpointError(
                f"{path} was refused for safety: it holds pickled Python objects (not only tensors and plain "
                "values) that could run code when loaded, which torch.load(weights_only=True) does not allow; "
                "it was not written by cvlab.checkpoints.save_checkpoint. Only if you made this file yourself "
                "and trust it, load it with torch.load(path, weights_only=False) and save the model again "
                f"with save_checkpoint; otherwise delete it. PyTorch's reason, in full:\n{message}") from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint: torch.load(weights_only=True) refused it. It is truncated or "
            "corrupt, or not a PyTorch checkpoint, or a pickle whose contents could run code when loaded. Delete "
            "it and save "
            "(or train) the model again, or check the path; load it with weights_only=False only if you made "
            f"the file yourself and trust it. PyTorch's reason, in full:\n{message}") from None
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). The file may be truncated or "
                              "corrupt, or not a checkpoint at all: delete it and save the model again, or "
                              "check the path.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "arch" not in ckpt:
        raise CheckpointError(f"{path} was not written by cvlab.checkpoints.save_checkpoint (no 'arch' "
                              "and 'state_dict' entries); for a bare state_dict use "
                              "model.load_state_dict(torch.load(path, weights_only=True))")
    _check_and_load(ckpt, model, path, arch or (type(model).__name__ if model is not None else None))
    return ckpt


def _check_and_load(ckpt: dict, model: torch.nn.Module | None, path: Any, expected: str | None) -> None:
    """``load_checkpoint``'s checks of a read checkpoint against the ``expected`` architecture and ``model``'s
    keys and shapes, then ``model.load_state_dict``; raises CheckpointError naming ``path``."""
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


#: optimizer settings that choose an implementation, not the arithmetic: not compared on resume
IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")
#: scheduler settings that say how long the schedule is: a factory rebuilds them on resume
TOTAL_KEYS = ("total_steps", "T_max", "total_iters")
_SCHEDULER_SETTINGS = {
    "StepLR": ("step_size", "gamma"), "MultiStepLR": ("milestones", "gamma"), "ExponentialLR": ("gamma",),
    "CosineAnnealingLR": ("T_max", "eta_min"), "LinearLR": ("start_factor", "end_factor", "total_iters"),
    "ConstantLR": ("factor", "total_iters"), "PolynomialLR": ("total_iters", "power"),
    "CosineAnnealingWarmRestarts": ("T_0", "T_mult", "eta_min"),
    "ReduceLROnPlateau": ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lrs", "eps"),
    "OneCycleLR": ("total_steps", "cycle_momentum", "_anneal_func_type"),
}


def _plain_value(v: Any) -> Any:
    if isinstance(v, collections.Counter):
        return sorted(v.elements())
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain_value(x) for x in v]
    if isinstance(v, (str, int, float, bool, type(None))):
        return v
    return repr(v)


def optimizer_config(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's type and constructor settings (``optimizer.defaults`` without params)."""
    return {"type": type(optimizer).__name__,
            "settings": {k: _plain_value(v) for k, v in optimizer.defaults.items() if k != "params"}}


def scheduler_config(scheduler: Any) -> dict[str, Any] | None:
    """The scheduler's type and the constructor settings that can be read back (None: no scheduler).

    E.g. ``OneCycleLR``: total_steps, max_lr, initial_lr, min_lr, pct_start, ...; ``StepLR``:
    step_size, gamma; ``CosineAnnealingLR``: T_max, eta_min. Other types: the type only.
    """
    if scheduler is None:
        return None
    name = type(scheduler).__name__
    settings = {k.lstrip("_"): _plain_value(getattr(scheduler, k)) for k in _SCHEDULER_SETTINGS.get(name, ())
                if hasattr(scheduler, k)}
    if name == "OneCycleLR":
        groups = scheduler.optimizer.param_groups
        for key in ("max_lr", "initial_lr", "min_lr"):
            settings[key] = [_plain_value(g.get(key)) for g in groups]
        phases = getattr(scheduler, "_schedule_phases", [])
        settings["three_phase"] = len(phases) == 3
        if phases and scheduler.total_steps:
            settings["pct_start"] = round((float(phases[0]["end_step"]) + 1) / scheduler.total_steps, 2)
    return {"type": name, "settings": settings}


def config_differences(what: str, saved: dict[str, Any] | None, now: dict[str, Any] | None, *,
                       ignore: tuple[str, ...] = ()) -> list[str]:
    """What differs between two ``optimizer_config``/``scheduler_config`` dicts, one line each."""
    type_of = lambda c: c["type"] if c else "none"
    if type_of(saved) != type_of(now):
        return [f"{what}: saved {type_of(saved)}, now {type_of(now)}"]
    if not saved or not now:
        return []
    s, n = saved.get("settings", {}), now.get("settings", {})
    return [f"{what} {k}: saved {s.get(k)!r}, now {n.get(k)!r}" for k in sorted(set(s) | set(n))
            if k not in ignore and s.get(k) != n.get(k)]


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
                           optimizer_config=optimizer_config(optimizer), scheduler_config=scheduler_config(scheduler),
                           scheduler=scheduler.state_dict() if scheduler is not None else None,
                           scaler=scaler.state_dict() if scaler is not None else None,
                           history=list(history or []), rng=rng_state(train_loader), **extra)


def load_training_state(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                        scheduler: Any = None, scaler: Any = None, train_loader: Any = None,
                        arch: str | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Restore a state written by ``save_training_state`` into the given objects.

    Loads the model's weights, the optimizer's, scheduler's and scaler's states (where both the
    object and the saved state exist) and every random state, including ``train_loader``'s.
    A checkpoint that records the optimizer's and scheduler's types and settings (every one
    ``save_training_state`` writes) is loaded only into an optimizer (and a given scheduler) of
    the same type and settings; implementation flags (foreach, fused, ...) may differ.

    Returns:
        the checkpoint dict (``epoch``, ``history`` and any extra entries).

    Raises:
        CheckpointError: as ``load_checkpoint``, a checkpoint that holds weights only, or an
            optimizer or scheduler of another type or with other settings (the message lists
            what differs, saved vs now).
    """
    state = load_checkpoint(path, model, arch=arch, map_location=map_location)
    if "optimizer" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} holds weights only, not a training state; resume from "
                              "the last.pt that fit(checkpoint_dir=...) writes")
    diffs = []
    if "optimizer_config" in state:
        diffs += config_differences("optimizer", state["optimizer_config"], optimizer_config(optimizer),
                                    ignore=IMPLEMENTATION_FLAGS)
    if scheduler is not None and "scheduler_config" in state:
        diffs += config_differences("scheduler", state["scheduler_config"], scheduler_config(scheduler))
    if diffs:
        raise CheckpointError(f"{path} was saved with other training settings than this run's: "
                              f"{'; '.join(diffs)}. Resume with the saved settings, or start a new run "
                              "(without resume_from, in a new checkpoint folder) to train with these.")
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} holds the state of another optimizer or other parameters than this one "
                              f"({type(exc).__name__}: {exc}): resume with the optimizer and model of the saved "
                              "run, or start a new run without resume_from") from None
    for part, saved in ((scheduler, state.get("scheduler")), (scaler, state.get("scaler"))):
        if part is not None and saved is not None:
            part.load_state_dict(saved)
    set_rng_state(state["rng"], train_loader)
    return state
