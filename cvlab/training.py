"""The training loop: ``train_one_epoch``, ``evaluate`` and ``fit``, named as in torchvision's
reference scripts (``references/classification/train.py``).

``train_one_epoch`` and ``evaluate`` are the loop lesson 01 writes by hand, with the same names
and the same numbers. ``fit`` composes them with small named parts that lesson 04 teaches one by
one: scheduler stepping, ``cvlab.history.EarlyStopping``, checkpoints after every epoch (``best.pt`` and
``last.pt``) and exact resume. Losses are averaged and accuracies counted per sample (not per
batch), so a smaller last batch weighs what it should. Accuracies are in % (0-100), losses in
the loss function's units (nats for cross-entropy), times in seconds.

Under torchrun (``cvlab.distributed``), ``fit`` trains a ``DistributedDataParallel`` model on every rank:
sums and counts are reduced over the ranks before they are divided, so every rank's History holds the
same numbers; only rank 0 writes checkpoints and shows progress.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .distributed import is_main_process, reduce_sums, sync_buffers, unwrap
from .history import EarlyStopping, History, TrainingInterrupted, epoch_or_diverged
from .resume import resume, save_epoch, save_failed
from .schedules import Scheduler, SchedulerFactory, make_scheduler, step_epoch_scheduler
from .utils import autocast_dtype, get_device, model_mode, progress_bar, set_seed

__all__ = ["evaluate", "fit", "train_one_epoch"]


def _check_batch(x: Any, y: Any) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"a batch must be a pair of tensors (x, y), got ({type(x).__name__}, "
                        f"{type(y).__name__}); did the dataset's transform turn images into tensors?")


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _len(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _train_batches(model: nn.Module, loader: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                   device: torch.device, bar: Any, scheduler: Scheduler | None, amp_dtype: torch.dtype | None,
                   scaler: torch.amp.GradScaler | None, max_grad_norm: float | None,
                   stats: dict | None = None) -> tuple[float, int, int]:
    """The body of ``train_one_epoch``: forward, loss, zero_grad, backward, (clip), step per batch.
    Returns the sums ``(loss x samples, correct, samples)``; ``_means`` turns them into (loss, accuracy %).

    ``stats``, if given, receives ``first_loss`` (the first batch's loss, once) and ``num_classes``
    (from 2-D logits), which ``fit``'s divergence rule uses."""
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        _check_batch(x, y)
        x, y = x.to(device), y.to(device)
        with _autocast(device, amp_dtype):
            logits = model(x)
            loss = loss_fn(logits, y)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"the training loss became {loss_value} after {seen} samples: "
                                     "lower the learning rate, clip gradients (max_grad_norm), or check "
                                     "the inputs for NaN")
        if stats is not None:
            stats.setdefault("first_loss", loss_value)
            if logits.dim() == 2 and logits.shape[1] >= 2:
                stats["num_classes"] = int(logits.shape[1])
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss_value * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        seen += len(y)
        bar.update(1)
    return total_loss, correct, seen


def _means(sums, what: str) -> tuple[float, float]:
    """``(loss x samples, correct, samples)`` -> (mean loss, accuracy in %)."""
    total_loss, correct, seen = sums
    if seen == 0:
        raise ValueError(f"the {what} loader yielded no batches")
    return total_loss / seen, 100.0 * correct / seen


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                    device: torch.device | str | None = None, *, scheduler: Scheduler | None = None,
                    amp_dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
                    max_grad_norm: float | None = None, progress: bool = False) -> tuple[float, float]:
    """One epoch of training over ``loader``: the loop lesson 01 writes by hand.

    Args:
        model: moved to ``device``; in train mode during the epoch, then back in its mode.
        loader: yields ``(x, y)``: x float32 (B, ...), y int64 class indices (B,).
        loss_fn: e.g. ``nn.CrossEntropyLoss()`` (mean over the batch).
        optimizer: steps once per batch.
        device: where batches are moved; None picks CUDA, then MPS, then CPU.
        scheduler: an optional learning-rate scheduler stepped after every batch
            (e.g. ``torch.optim.lr_scheduler.OneCycleLR``).
        amp_dtype: run the forward pass under ``torch.autocast`` with this dtype
            (``torch.bfloat16`` on CPU, ``torch.float16`` on CUDA); None for full float32.
        scaler: a ``torch.amp.GradScaler`` for float16 (scales the loss so small gradients do
            not underflow); None otherwise.
        max_grad_norm: clip the gradients' global L2 norm to this value before each step
            (``torch.nn.utils.clip_grad_norm_``); None for no clipping.
        progress: show a progress bar (``cvlab.utils.progress_bar``, one tick per batch).

    Returns:
        ``(loss, accuracy)``: the sample-weighted mean loss and the accuracy in % over the epoch.

    Raises:
        FloatingPointError: the loss became NaN or infinite (lower the learning rate).
        TypeError: a batch that is not a pair of tensors.
        ValueError: the loader yielded no batches.
    """
    device = get_device(device)
    with model_mode(model.to(device), True), progress_bar(total=_len(loader), desc="train", enabled=progress) as bar:
        return _means(_train_batches(model, loader, loss_fn, optimizer, device, bar, scheduler, amp_dtype, scaler,
                                     max_grad_norm), "training")


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable, loss_fn: Callable | None = None,
             device: torch.device | str | None = None, *, amp_dtype: torch.dtype | None = None,
             progress: bool = False) -> tuple[float, float]:
    """Evaluate ``model`` over ``loader`` without gradients, in eval mode (then back in its mode).

    Args:
        loss_fn: defaults to ``nn.CrossEntropyLoss()``.
        device: as in ``train_one_epoch``.
        amp_dtype: as in ``train_one_epoch``.
        progress: show a progress bar (``cvlab.utils.progress_bar``).

    Returns:
        ``(loss, accuracy)``: the sample-weighted mean loss and the accuracy in %.

    Raises:
        TypeError: a batch that is not a pair of tensors.
        ValueError: the loader yielded no batches.
    """
    device = get_device(device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    with model_mode(model.to(device), False), progress_bar(total=_len(loader), desc="evaluate", enabled=progress) as bar:
        return _means(_evaluation_sums(model, loader, loss_fn, device, amp_dtype, bar), "evaluation")


def _evaluation_sums(model: nn.Module, loader: Iterable, loss_fn: Callable, device: torch.device,
                     amp_dtype: torch.dtype | None, bar: Any = None) -> tuple[float, int, int]:
    """The body of ``evaluate`` (no gradients; the caller sets eval mode): ``(loss x samples, correct, samples)``."""
    total_loss, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in loader:
            _check_batch(x, y)
            x, y = x.to(device), y.to(device)
            with _autocast(device, amp_dtype):
                logits = model(x)
                total_loss += loss_fn(logits, y).item() * len(y)
            correct += (logits.argmax(dim=1) == y).sum().item()
            seen += len(y)
            if bar is not None:
                bar.update(1)
    return total_loss, correct, seen


def _evaluate_everywhere(model: nn.Module, loader: Iterable, loss_fn: Callable, device: torch.device,
                         amp_dtype: torch.dtype | None) -> tuple[float, float]:
    """``evaluate``'s numbers; on several processes each rank evaluates its share of ``loader`` with rank 0's
    buffers (``sync_buffers``: the model rank 0 saves), and the sums are reduced over the ranks (on one
    process both steps do nothing)."""
    sync_buffers(model)
    module = unwrap(model)
    with model_mode(module, False):
        return _means(reduce_sums(_evaluation_sums(module, loader, loss_fn, device, amp_dtype)), "evaluation")


def _default_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused where this PyTorch and device support it, else the standard implementation."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def _run_epoch(epoch, model, train_loader, val_loader, loss_fn, optimizer, device, bar, scheduler, per_batch,
               monitor, amp_dtype, scaler, max_grad_norm, stats=None) -> dict[str, float]:
    """Train one epoch, evaluate, step an epoch scheduler; return the epoch's record."""
    t0 = time.perf_counter()
    with model_mode(model, True):
        sums = _train_batches(model, train_loader, loss_fn, optimizer, device, bar, scheduler if per_batch else None,
                              amp_dtype, scaler, max_grad_norm, stats)
    train_loss, train_acc = _means(reduce_sums(sums), "training")
    record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
    if val_loader is not None:
        record["val_loss"], record["val_acc"] = _evaluate_everywhere(model, val_loader, loss_fn, device, amp_dtype)
    step_epoch_scheduler(scheduler, per_batch, record[monitor])
    record["lr"] = optimizer.param_groups[0]["lr"]
    record["seconds"] = time.perf_counter() - t0
    return record


def _start_epoch(train_loader: Iterable, epoch: int, on_epoch_start: Callable[[int], None] | None) -> None:
    """Before each epoch: a sampler that reshuffles per epoch (``DistributedSampler``) is told the epoch, so
    every rank draws the same new order; then ``on_epoch_start(epoch)``."""
    set_epoch = getattr(getattr(train_loader, "sampler", None), "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)
    if on_epoch_start is not None:
        on_epoch_start(epoch)


def _check_arguments(epochs, scheduler_step: str, monitor: str, val_loader) -> str:
    """Raise ValueError for a bad ``epochs`` or ``scheduler_step``; return the monitor to use (a
    "val_*" monitor falls back to its "train_*" twin without a validation loader)."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if scheduler_step not in ("batch", "epoch"):
        raise ValueError(f"scheduler_step must be 'batch' or 'epoch', got {scheduler_step!r}")
    return monitor.replace("val_", "train_") if val_loader is None and monitor.startswith("val_") else monitor


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *,
        epochs: int = 3, optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        scheduler: Scheduler | SchedulerFactory | None = None, scheduler_step: str = "batch",
        loss_fn: Callable | None = None, device: torch.device | str | None = None,
        seed: int | None = None, progress: bool = True, channels_last: bool = False,
        amp_dtype: torch.dtype | str | None = None, max_grad_norm: float | None = None,
        early_stopping_patience: int | None = None, monitor: str = "val_loss", min_delta: float = 0.0,
        checkpoint_dir: str | os.PathLike | None = None, resume_from: str | os.PathLike | None = None,
        checkpoint_info: dict[str, Any] | None = None,
        on_epoch_start: Callable[[int], None] | None = None) -> History:
    """Train ``model`` for ``epochs`` epochs, evaluating after each; return the ``History``.

    Each epoch is ``train_one_epoch`` + ``evaluate``; around them, named parts: the scheduler
    is stepped per batch or per epoch, ``EarlyStopping`` follows ``monitor``, checkpoints are
    written, and ``resume_from`` restores all of it.

    On several processes (torchrun; ``cvlab.distributed.init_distributed``), pass the model wrapped by
    ``cvlab.distributed.wrap_model`` (DistributedDataParallel: gradients averaged over the ranks) and
    loaders of each rank's share (``train_sampler``, ``eval_indices``): the training sums and counts, and
    the validation ones, are reduced over the ranks, so every rank's History holds the same numbers, the
    numbers of the whole data; the sampler's ``set_epoch`` is called before each epoch; only rank 0 shows
    progress and writes ``checkpoint_dir`` (the wrapped model's ``.module``, so the files load into a plain
    model); every rank reads ``resume_from``.

    Args:
        model: moved to ``device``.
        train_loader, val_loader: yield ``(x, y)`` batches (``DataLoader`` or
            ``cvlab.loaders.InMemoryLoader``); without ``val_loader`` only training is measured.
        epochs: the total number of epochs (a resumed run continues up to this number).
        optimizer: defaults to ``torch.optim.Adam(model.parameters(), lr=lr)``, in its fused
            form (one kernel updates every parameter) where the device supports it: the same
            algorithm, measured ~1.3x faster per step for small models on a CPU.
        lr: learning rate of the default optimizer.
        scheduler: a learning-rate scheduler, or a factory ``(optimizer, total_steps) ->
            scheduler`` that ``fit`` calls with the number of times it will step the scheduler:
            ``epochs * len(train_loader)`` for ``scheduler_step="batch"``, ``epochs`` for "epoch".
            E.g. ``lambda opt, n: OneCycleLR(opt, max_lr=1e-2, total_steps=n)``.
        scheduler_step: "batch" steps it after every batch (``OneCycleLR``); "epoch" after
            every epoch (``StepLR``, ``CosineAnnealingLR``); ``ReduceLROnPlateau`` is stepped per
            epoch with the monitored value.
        loss_fn: defaults to ``nn.CrossEntropyLoss()``.
        device: None picks CUDA, then MPS, then CPU (``cvlab.utils.get_device``).
        seed: if given, ``set_seed(seed)`` first (it does not re-initialise the model).
        progress: show a progress bar (``cvlab.utils.progress_bar``, one tick per batch).
        channels_last: store the model's 4-D weights in ``torch.channels_last`` (NHWC) memory
            format, which CPU convolution kernels (oneDNN) and tensor cores prefer; measured here
            1.3-2x faster for small CNNs on a 2-core CPU. Numbers differ from the default layout
            only by floating-point rounding.
        amp_dtype: mixed precision with ``torch.autocast``: ``torch.bfloat16`` / "bfloat16"
            (CPU or CUDA) or ``torch.float16`` / "float16" (CUDA, with a GradScaler); None
            (default) trains in float32. On CPUs without bfloat16 hardware it is slower.
        max_grad_norm: clip the gradients' global L2 norm to this value (None: no clipping).
        early_stopping_patience, monitor, min_delta: as ``EarlyStopping``; ``monitor`` also
            decides the best checkpoint and ``ReduceLROnPlateau``. Without ``val_loader`` a
            "val_*" monitor falls back to its "train_*" twin.
        checkpoint_dir: if given, after every epoch write ``last.pt`` (model, optimizer,
            scheduler, scaler, epoch, history, every RNG state) and, when ``monitor`` improved,
            ``best.pt``; both atomically (``cvlab.checkpoints.save_checkpoint``).
        resume_from: a ``last.pt`` written by an earlier ``fit``: restores all of the above and
            continues from the next epoch. With the same data, model and settings the resumed
            run ends with exactly the numbers of an uninterrupted one. ``epochs`` may be larger
            than the saved run's: a scheduler given as a factory is then rebuilt for the new
            total and advanced to the steps already done (the remaining learning rates differ
            from those of a run planned that long from the start; a line says so).
        checkpoint_info: extra entries for the checkpoints (``arch``, ``model_kwargs``,
            ``class_names``).
        on_epoch_start: called with the epoch number (1-based) before each epoch, the first of a resumed
            run included: e.g. ``cvlab.backbones.BackboneSchedule``, which unfreezes a backbone from some
            epoch on.

    Returns:
        the ``History`` (for a resumed run, including the epochs before the interruption).

    Raises:
        ValueError: a bad argument (the message says which and what is allowed).
        TrainingInterrupted: (a ``KeyboardInterrupt``) the run was stopped; ``last.pt`` and
            ``best.pt`` hold the last finished epoch and the best one, the exception's
            ``.history`` the finished epochs. It is raised, not returned, so that a stopped cell
            (or a test runner's time limit) never looks like a finished run.
        TrainingDiverged: (a ``FloatingPointError``) the loss became NaN or infinite, or an
            epoch's mean training loss grew above 3x the first batch's loss and above
            log(num_classes) (guessing at random). The epochs that finished are kept: their
            ``History`` is the exception's ``.history`` and their ``last.pt``/``best.pt`` stay.
        OSError: a checkpoint could not be written (e.g. the disk is full): training stops, the
            files already written stay intact, and the error's ``.history`` holds every
            finished epoch.
        CheckpointError: ``resume_from`` is missing, corrupt, holds another model, or was saved
            with another optimizer (type or settings) or scheduler (type or settings other than
            its length); or a scheduler instance planned for fewer steps than ``epochs`` take.
    """
    monitor = _check_arguments(epochs, scheduler_step, monitor, val_loader)
    stopper = EarlyStopping(monitor, early_stopping_patience, min_delta)
    if seed is not None:
        set_seed(seed)
    device = get_device(device)
    amp_dtype = autocast_dtype(amp_dtype, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = optimizer or _default_optimizer(model, lr)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    per_batch = scheduler_step == "batch"
    steps = _len(train_loader)
    factory = None if isinstance(scheduler, (torch.optim.lr_scheduler.LRScheduler,
                                             torch.optim.lr_scheduler.ReduceLROnPlateau)) else scheduler
    needed = (epochs * steps if steps else None) if per_batch else epochs
    scheduler = make_scheduler(scheduler, optimizer, needed)
    per_batch = per_batch and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    info, ckpt_dir = dict(checkpoint_info or {}), Path(checkpoint_dir) if checkpoint_dir is not None else None
    main = is_main_process()
    writes = ckpt_dir if main else None
    history, start = History(), 1
    if resume_from is not None:
        history, start, scheduler = resume(resume_from, unwrap(model), optimizer, scheduler, factory, needed, epochs,
                                            scaler, stopper, train_loader, info, device)
    total = (epochs - start + 1) * steps if steps else None
    stats: dict[str, float] = {}
    bar = progress_bar(total=total, desc="fit", enabled=progress and start <= epochs and main, leave=True)
    try:
        for epoch in range(start, epochs + 1):
            bar.set_description(f"epoch {epoch}/{epochs}")
            _start_epoch(train_loader, epoch, on_epoch_start)
            record = epoch_or_diverged(epoch, history, ckpt_dir, optimizer, stats, lambda: _run_epoch(
                epoch, model, train_loader, val_loader, loss_fn, optimizer, device, bar, scheduler, per_batch, monitor,
                amp_dtype, scaler, max_grad_norm, stats))
            history.append(record)
            bar.set_postfix({k: round(v, 3) for k, v in record.items() if k in ("train_loss", "val_loss", "val_acc")})
            improved = stopper.update(record)
            try:
                save_epoch(writes, unwrap(model), record, improved, info, optimizer=optimizer, scheduler=scheduler,
                           scaler=scaler, history=history.records, train_loader=train_loader, planned_steps=needed,
                           **stopper.state_dict())
            except OSError as exc:
                raise save_failed(exc, epoch, history, ckpt_dir) from exc
            if stopper.should_stop:
                history.stopped_early = True
                if main:
                    print(f"Early stopping after epoch {epoch}: {monitor} has not improved for {stopper.stale} "
                          f"epochs (best {stopper.best:.4f})")
                break
    except KeyboardInterrupt as exc:
        history.interrupted = True
        where = f"; last.pt and best.pt in {ckpt_dir} hold the last finished and the best epoch (resume with " \
            f"resume_from=.../last.pt)" if ckpt_dir is not None and len(history) else ""
        raise TrainingInterrupted(f"training interrupted after {len(history)} finished epoch(s); their History is "
                                  f"this exception's .history (in Jupyter: sys.last_value.history){where}",
                                  history) from exc
    finally:
        bar.close()
    return history
