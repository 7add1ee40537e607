"""Transfer learning: adapt a pretrained network to a new task.

A new head for the new classes (``replace_head``), frozen layers (``freeze`` / ``unfreeze``), a
learning rate per part (``param_groups``) and feature caching for frozen backbones
(``extract_features``). Lesson 05 builds each step by hand first; these are the same steps.
"""
from __future__ import annotations

import torch
from torch import nn

from .models import find_layer
from .utils import get_device, model_mode, progress_bar

__all__ = ["FrozenPrefix", "extract_features", "freeze", "param_groups", "replace_head", "unfreeze"]



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



class FrozenPrefix(nn.Sequential):
    """A ``nn.Sequential`` of pretrained blocks whose first ``frozen`` blocks stay fixed: no
    gradients, and their BatchNorm layers stay in eval mode (running statistics unchanged) even
    when the whole model is put in train mode, which ``freeze`` alone does not do.

    Args:
        blocks: the blocks, e.g. ``mobilenet_v2(...).features[:7]``.
        frozen: how many of the first blocks to fix, 0..len(blocks).

    Its ``state_dict`` keys are those of ``blocks`` ("0.0.weight", ...), so a model whose ``features`` are
    replaced by a ``FrozenPrefix`` saves and loads as the plain model does. ``set_frozen`` moves the boundary
    later (staged unfreezing).

    Raises:
        ValueError: frozen outside 0..len(blocks).
    """

    def __init__(self, blocks: nn.Sequential, frozen: int):
        if not 0 <= frozen <= len(blocks):
            raise ValueError(f"frozen must be in 0..{len(blocks)} (the number of blocks), got {frozen}")
        super().__init__(*blocks)
        self.frozen = frozen
        freeze(*list(self)[:frozen])

    def set_frozen(self, frozen: int) -> None:
        """Fix the first ``frozen`` blocks (no gradients, BatchNorm in eval mode) and train the others
        (``requires_grad = True``, the module's mode): e.g. ``set_frozen(0)`` lets the whole backbone join
        training. The optimizer must already hold the parameters (frozen ones get no gradient, so it leaves them).

        Raises:
            ValueError: frozen outside 0..len(self).
        """
        if not 0 <= frozen <= len(self):
            raise ValueError(f"frozen must be in 0..{len(self)} (the number of blocks), got {frozen}")
        self.frozen = frozen
        freeze(*list(self)[:frozen])
        unfreeze(*list(self)[frozen:])
        self.train(self.training)

    def __getitem__(self, idx):
        """A block, or a plain ``nn.Sequential`` of the blocks in a slice (sharing them)."""
        return nn.Sequential(*list(self)[idx]) if isinstance(idx, slice) else super().__getitem__(idx)

    def train(self, mode: bool = True) -> "FrozenPrefix":
        super().train(mode)
        for block in list(self)[:self.frozen]:
            block.eval()
        return self


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
    device = torch.device(device) if device is not None else get_device()
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    feats, labels = [], []
    with model_mode(module.to(device), False):
        for batch in progress_bar(data, desc=desc, enabled=progress):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError("data must yield (images, labels) pairs, as a DataLoader over an "
                                 "ImageFolder or cvlab.loaders.InMemoryLoader does")
            x, y = batch
            feats.append(module(x.to(device)).float().cpu().contiguous())
            labels.append(torch.as_tensor(y).long().cpu())
    if not feats:
        raise ValueError("data yielded no batches: is the dataset empty?")
    return torch.cat(feats), torch.cat(labels)
