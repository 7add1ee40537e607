"""The training loop: ``train_step``, ``eval_step`` and ``fit``.

These are the loop lesson 01 writes by hand, with the same names and the same numbers. Losses
are averaged and accuracies counted per sample (not per batch), so a smaller last batch weighs
what it should. Accuracies are in % (0-100), losses in the loss function's units (nats for
cross-entropy), times in seconds.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .utils import get_device, save_checkpoint, set_seed

__all__ = ["History", "eval_step", "fit", "train_step"]


def _check_batch(x: Any, y: Any) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"a batch must be a pair of tensors (x, y), got ({type(x).__name__}, "
                        f"{type(y).__name__}); did the dataset's transform turn images into tensors?")


def train_step(model: nn.Module, loader: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
               device: torch.device | str = "cpu", progress: tqdm | None = None,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> tuple[float, float]:
    """One epoch of training over ``loader``.

    Args:
        model: already on ``device``; put in train mode here.
        loader: yields ``(x, y)``: x float32 (B, ...), y int64 class indices (B,).
        loss_fn: e.g. ``nn.CrossEntropyLoss()`` (mean over the batch).
        optimizer: steps once per batch.
        device: where batches are moved.
        progress: an optional tqdm bar advanced by one per batch.
        scheduler: an optional learning-rate scheduler stepped after every batch
            (e.g. ``torch.optim.lr_scheduler.OneCycleLR``).

    Returns:
        ``(loss, accuracy)``: the sample-weighted mean loss and the accuracy in % over the epoch.

    Raises:
        FloatingPointError: the loss became NaN or infinite (lower the learning rate).
    """
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        _check_batch(x, y)
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = loss_fn(logits, y)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"the training loss became {loss_value} after {seen} samples: "
                                     "lower the learning rate, or check the inputs for NaN")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss_value * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        seen += len(y)
        if progress is not None:
            progress.update(1)
    if seen == 0:
        raise ValueError("the training loader yielded no batches")
    return total_loss / seen, 100.0 * correct / seen


@torch.inference_mode()
def eval_step(model: nn.Module, loader: Iterable, loss_fn: Callable,
              device: torch.device | str = "cpu") -> tuple[float, float]:
    """Evaluate ``model`` over ``loader`` without gradients, in eval mode.

    Returns:
        ``(loss, accuracy)``: the sample-weighted mean loss and the accuracy in %.
    """
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        _check_batch(x, y)
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total_loss += loss_fn(logits, y).item() * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        seen += len(y)
    if seen == 0:
        raise ValueError("the evaluation loader yielded no batches")
    return total_loss / seen, 100.0 * correct / seen


def _default_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused where this PyTorch and device support it, else the standard implementation."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr)


class History:
    """What ``fit`` measured, one record per epoch.

    Each record is a dict: ``epoch`` (1-based), ``train_loss``, ``train_acc`` (%), ``val_loss``,
    ``val_acc`` (%) when there is a validation loader, ``lr`` and ``seconds`` (wall clock for the
    epoch, training and evaluation). ``history["val_acc"]`` gives one column as a list.

    Attributes:
        records: the list of per-epoch dicts.
        interrupted: True when training was stopped early by a KeyboardInterrupt.
    """

    def __init__(self, records: list[dict[str, float]] | None = None):
        self.records: list[dict[str, float]] = list(records or [])
        self.interrupted = False

    def append(self, record: dict[str, float]) -> None:
        self.records.append(dict(record))

    def __getitem__(self, key: str) -> list[float]:
        if not self.records or key not in self.records[0]:
            known = sorted(self.records[0]) if self.records else []
            raise KeyError(f"no column {key!r} in this history; columns: {known}")
        return [r[key] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def total_seconds(self) -> float:
        """Training time summed over the epochs, in seconds."""
        return float(sum(r["seconds"] for r in self.records))

    def last(self) -> dict[str, float]:
        """The last epoch's record."""
        if not self.records:
            raise IndexError("the history is empty: no epoch finished")
        return self.records[-1]

    def best(self, key: str = "val_acc", mode: str = "max") -> dict[str, float]:
        """The record with the highest (``mode="max"``) or lowest (``"min"``) ``key``."""
        values = self[key]
        pick = max if mode == "max" else min
        return self.records[values.index(pick(values))]

    def __repr__(self) -> str:
        return f"History({len(self)} epochs{', interrupted' if self.interrupted else ''})"


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *,
        epochs: int = 3, optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        loss_fn: Callable | None = None, device: torch.device | str | None = None,
        seed: int | None = None, progress: bool = True, channels_last: bool = False,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_info: dict[str, Any] | None = None) -> History:
    """Train ``model`` for ``epochs`` epochs, evaluating after each; return the ``History``.

    Args:
        model: moved to ``device``.
        train_loader, val_loader: yield ``(x, y)`` batches (``DataLoader`` or
            ``cvlab.data.InMemoryLoader``); without ``val_loader`` only training is measured.
        epochs: number of passes over ``train_loader``.
        optimizer: defaults to ``torch.optim.Adam(model.parameters(), lr=lr)``, in its fused
            form (one kernel updates every parameter) where the device supports it: the same
            algorithm, measured ~1.3x faster per step for small models on a CPU.
        lr: learning rate of the default optimizer.
        scheduler: an optional learning-rate scheduler, stepped after every batch (so its
            length is ``epochs * len(train_loader)`` steps, as ``OneCycleLR`` expects).
        loss_fn: defaults to ``nn.CrossEntropyLoss()``.
        device: defaults to ``cvlab.utils.get_device()`` (CUDA, then MPS, then CPU).
        seed: if given, ``set_seed(seed)`` first (it does not re-initialise the model).
        progress: show a tqdm progress bar (one tick per batch).
        channels_last: store the model's 4-D weights in ``torch.channels_last`` (NHWC) memory
            format, which CPU convolution kernels (oneDNN) and tensor cores prefer; measured here
            1.3-2x faster for small CNNs on a 2-core CPU. Convolutions then produce
            channels-last outputs whatever the input's layout. Numbers differ from the default
            layout only by floating-point rounding.
        checkpoint_path: if given, save the best model so far (highest ``val_acc``, or lowest
            ``train_loss`` without validation) there after each epoch, atomically, with the
            history; a run stopped midway keeps its best checkpoint.
        checkpoint_info: extra entries for ``save_checkpoint`` (``arch``, ``model_kwargs``,
            ``class_names``).

    Returns:
        the ``History``. Stopping the cell (KeyboardInterrupt) ends training early and still
        returns the history of the finished epochs, with ``history.interrupted = True``.

    Raises:
        ValueError: ``epochs`` < 1. FloatingPointError: the loss became NaN or infinite.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if seed is not None:
        set_seed(seed)
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = optimizer or _default_optimizer(model, lr)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    history = History()
    best_score = -math.inf
    try:
        total = epochs * len(train_loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    bar = tqdm(total=total, desc="fit", unit="batch", disable=not progress, leave=True)
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            bar.set_description(f"epoch {epoch}/{epochs}")
            train_loss, train_acc = train_step(model, train_loader, loss_fn, optimizer, device, bar, scheduler)
            record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
            if val_loader is not None:
                record["val_loss"], record["val_acc"] = eval_step(model, val_loader, loss_fn, device)
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            bar.set_postfix({k: round(v, 3) for k, v in record.items() if k in ("train_loss", "val_loss", "val_acc")})
            score = record["val_acc"] if val_loader is not None else -train_loss
            if checkpoint_path is not None and score > best_score:
                best_score = score
                info = dict(checkpoint_info or {})
                save_checkpoint(checkpoint_path, model, metrics={k: v for k, v in record.items()},
                                history=history.records, **info)
    except KeyboardInterrupt:
        history.interrupted = True
        print(f"Training interrupted after {len(history)} finished epoch(s); the history so far is "
              "returned" + (f" and the best checkpoint is in {checkpoint_path}" if checkpoint_path and len(history) else ""))
    finally:
        bar.close()
    return history
