"""Learning-rate schedules in ``fit``: a scheduler or a factory ``(optimizer, total_steps) ->
scheduler``, stepped per batch or per epoch, and rebuilt for a longer run when one is resumed.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from .checkpoints import TOTAL_KEYS

__all__ = ["Scheduler", "SchedulerFactory", "make_scheduler", "rebuild_scheduler", "schedule_total",
           "step_epoch_scheduler"]

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


#: a scheduler factory: ``(optimizer, total_steps) -> scheduler``
SchedulerFactory = Callable[[torch.optim.Optimizer, int], Scheduler]



def make_scheduler(scheduler: Scheduler | SchedulerFactory | None, optimizer: torch.optim.Optimizer,
                    total_steps: int | None) -> Scheduler | None:
    """A scheduler as given, or built by a factory ``(optimizer, total_steps) -> scheduler``."""
    if scheduler is None or isinstance(scheduler, (torch.optim.lr_scheduler.LRScheduler,
                                                   torch.optim.lr_scheduler.ReduceLROnPlateau)):
        return scheduler
    if not callable(scheduler):
        raise TypeError(f"scheduler must be a learning-rate scheduler or a function (optimizer, total_steps) -> "
                        f"scheduler, got {type(scheduler).__name__}")
    if total_steps is None:
        raise ValueError("a scheduler factory needs len(train_loader); this loader has no length: build the "
                         "scheduler yourself and pass it")
    return scheduler(optimizer, total_steps)



def step_epoch_scheduler(scheduler: Scheduler | None, per_batch: bool, value: float) -> None:
    """Step a scheduler at the end of an epoch: ``ReduceLROnPlateau`` with the monitored ``value``,
    any other scheduler unless it is stepped per batch (``per_batch``)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(value)
    elif scheduler is not None and not per_batch:
        scheduler.step()



def schedule_total(config: dict | None) -> int | None:
    """The length (steps or epochs) a scheduler was planned for, read from its recorded settings
    (``cvlab.checkpoints.scheduler_config``); None when it has no length of its own."""
    settings = (config or {}).get("settings", {})
    return next((settings[k] for k in TOTAL_KEYS if k in settings), None)



def rebuild_scheduler(factory, optimizer, total: int, done: int):
    """A factory's scheduler for ``total`` steps, advanced by ``done`` steps (the optimizer's state
    already restored): every group starts again from its initial learning rate."""
    for group in optimizer.param_groups:
        if "initial_lr" in group:
            group["lr"] = group["initial_lr"]
    scheduler = factory(optimizer, total)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        while scheduler.last_epoch < done:
            scheduler.step()
    return scheduler

