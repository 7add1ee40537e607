"""Argument checks the widgets share: a model, its class names, a top-k, its device and outputs."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a classifier returning logits), got {type(model).__name__}")



def _class_name_list(class_names) -> list[str]:
    """``class_names`` as a list of str, or a TypeError saying what was given and what to give."""
    if isinstance(class_names, str):
        raise TypeError(f"class_names must be a list of names, one per class; got the str {class_names!r}")
    if isinstance(class_names, Mapping):
        raise TypeError("class_names must be a list of names, one per class; got a dict: for {index: name} "
                        "pass [names[i] for i in range(len(names))]")
    try:
        names = list(class_names)
    except TypeError:
        raise TypeError(f"class_names must be a list of names, one per class; got "
                        f"{type(class_names).__name__}") from None
    odd = [n for n in names if not isinstance(n, str)]
    if odd:
        raise TypeError(f"class names must be str, got {odd[0]!r} ({type(odd[0]).__name__}); "
                        "e.g. [str(c) for c in class_names]")
    return names



def _check_k(name: str, k, most: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name} must be an int, got {type(k).__name__}")
    if not 1 <= k <= most:
        raise ValueError(f"{name} must be in 1..{most}, got {k}")



def _device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    tensor = next(iter(model.buffers()), None) if tensor is None else tensor
    return tensor.device if tensor is not None else torch.device("cpu")



def _check_outputs(model: nn.Module, logits: torch.Tensor, names: list[str]) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits (B, num_classes), got {got}")
    if logits.shape[1] != len(names):
        raise ValueError(f"the model has {logits.shape[1]} outputs (classes) but {len(names)} class names were given: "
                         "give one name per output, in the model's class order")

