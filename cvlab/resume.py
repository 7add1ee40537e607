"""A run across epochs and sessions: the checkpoints ``fit`` writes after each epoch (``best.pt``,
``last.pt``) and resuming from ``last.pt``, checking that the optimizer and scheduler are the
saved ones and rebuilding a factory's schedule when the run is made longer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoints import (TOTAL_KEYS, CheckpointError, config_differences, load_training_state, save_checkpoint,
                          save_training_state, scheduler_config)
from .history import History
from .schedules import rebuild_scheduler, schedule_total
from .utils import get_device

__all__ = ["resume", "save_epoch", "save_failed"]


def save_epoch(directory: Path | None, model, record, improved: bool, info: dict, **state) -> None:
    """``best.pt`` when the monitored value improved, and ``last.pt`` (the whole training state)."""
    if directory is None:
        return
    if improved:
        save_checkpoint(directory / "best.pt", model, metrics=record, epoch=int(record["epoch"]), **info)
    save_training_state(directory / "last.pt", model, epoch=int(record["epoch"]), metrics=record, **state, **info)



def resume(path, model, optimizer, scheduler, factory, needed, epochs, scaler, stopper, train_loader, info,
            device: "torch.device | str | None" = None) -> tuple[History, int, Any]:
    """Restore a ``last.pt``; return the history so far, the next epoch and the scheduler to use.

    The optimizer must have the saved type and settings, the scheduler the saved type and
    settings except its length (``TOTAL_KEYS``). A scheduler built by a factory for another
    length is checked by building the factory's scheduler for the saved length (settings derived
    from the length, like a step_size of n // 3, then match too), then rebuilt for the new length
    and advanced to the steps already done. An instance must fit ``needed``. ``device``: where the
    saved tensors go (None picks CUDA, then MPS, then CPU, as ``fit`` does).
    """
    now = scheduler_config(scheduler)
    state = load_training_state(path, model, optimizer, scheduler=None, scaler=scaler, train_loader=train_loader,
                                arch=info.get("arch"), map_location=get_device(device))
    saved_state = state.get("scheduler")
    if "scheduler_config" in state:
        saved = state["scheduler_config"]
        saved_total, now_total = schedule_total(saved), schedule_total(now)
        if saved_total is None and now_total is None and factory is not None \
                and state.get("planned_steps") is not None:  # no length of its own: the n given to the factory
            saved_total, now_total = int(state["planned_steps"]), needed
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            saved_total = now_total  # it follows the monitored value, not a length: its state is loaded
        rebuild = saved_total != now_total and saved_state is not None and factory is not None
        if rebuild:  # the same factory, built for the saved length, must give the saved scheduler
            probe = scheduler_config(rebuild_scheduler(factory, optimizer, saved_total, 0))
            diffs = config_differences("scheduler", saved, probe)
        else:
            diffs = config_differences("scheduler", saved, now, ignore=TOTAL_KEYS)
        if diffs:
            raise CheckpointError(f"{path} was saved with another learning-rate scheduler than this run's: "
                                  f"{'; '.join(diffs)}. Resume with the saved scheduler, or start a new run "
                                  "(without resume_from, in a new checkpoint folder) to train with this one.")
        if saved_total != now_total and saved_state is not None:
            if factory is None:
                raise CheckpointError(
                    f"{path} was trained with a {saved['type']} planned for {saved_total} steps, and the "
                    f"scheduler given now is planned for {now_total}: to train for {epochs} epochs in all, pass "
                    "the scheduler as a factory, e.g. scheduler=lambda opt, n: "
                    f"{saved['type']}(opt, ..., n), and fit rebuilds it for the new length")
            done = int(saved_state["last_epoch"])
            scheduler = rebuild_scheduler(factory, optimizer, now_total, done)
            print(f"Resuming {path}: the {saved['type']} schedule was rebuilt for {now_total} steps (it was "
                  f"planned for {saved_total}) and advanced to step {done}, where training stopped; the learning "
                  f"rates of the remaining steps differ from those of a run planned for {epochs} epochs from the "
                  "start.")
            saved_state = None
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and needed is not None \
            and scheduler.total_steps < needed:
        raise CheckpointError(f"the OneCycleLR given is planned for {scheduler.total_steps} steps, but "
                              f"{epochs} epochs take {needed}: pass the scheduler as a factory, e.g. "
                              "scheduler=lambda opt, n: OneCycleLR(opt, max_lr=..., total_steps=n), and fit "
                              f"builds it for the right length (resuming {path})")
    if scheduler is not None and saved_state is not None:
        scheduler.load_state_dict(saved_state)
    stopper.load_state_dict(state)
    return History(state.get("history", [])), int(state["epoch"]) + 1, scheduler


def save_failed(exc: OSError, epoch: int, history: History, ckpt_dir: Path) -> OSError:
    """An OSError that says training stopped because epoch ``epoch``'s checkpoint could not be
    written, and carries the ``history`` (all finished epochs, this one included) as ``.history``."""
    error = OSError(exc.errno, f"training stopped after epoch {epoch}: its checkpoint could not be written to "
                               f"{ckpt_dir} ({exc.strerror or exc}). The checkpoint files already there are intact; the "
                               f"history of the {len(history)} finished epoch(s) is this exception's .history. Free "
                               "disk space, make the folder writable or pick another checkpoint_dir, then resume "
                               "from last.pt or train again.")
    error.history = history
    return error

