"""What training measured, and what it decides from that: ``History`` keeps one record per
epoch (losses, accuracies in %, learning rate, seconds); ``EarlyStopping`` follows one of those
numbers and says when it improved (for ``best.pt``) and when to stop (Prechelt, 1998, "Early
Stopping - But When?"). ``cvlab.training.fit`` uses both; ``plot_history`` draws a History.
A run that ends before its last epoch raises an exception that carries its History:
``TrainingDiverged`` or ``TrainingInterrupted``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from .distributed import is_distributed, reduce_sums, world_size

__all__ = ["DIVERGENCE_FACTOR", "EarlyStopping", "History", "TrainingDiverged", "TrainingInterrupted", "diverged_error",
           "divergence_reason", "epoch_or_diverged"]


class History:
    """What ``fit`` measured, one record per epoch.

    Each record is a dict: ``epoch`` (1-based), ``train_loss``, ``train_acc`` (%), ``val_loss``,
    ``val_acc`` (%) when there is a validation loader, ``lr`` (at the end of the epoch) and
    ``seconds`` (wall clock for the epoch, training and evaluation). ``history["val_acc"]`` gives
    one column as a list.

    Attributes:
        records: the list of per-epoch dicts.
        interrupted: True when training was stopped by a KeyboardInterrupt.
        stopped_early: True when early stopping ended training.
        diverged: True when ``fit`` stopped because training diverged (``TrainingDiverged``).
    """

    def __init__(self, records: list[dict[str, float]] | None = None):
        self.records: list[dict[str, float]] = [dict(r) for r in records or []]
        self.interrupted = False
        self.stopped_early = False
        self.diverged = False

    def append(self, record: dict[str, float]) -> None:
        """Add one epoch's record (a copy is kept)."""
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
        """The record with the highest (``mode="max"``) or lowest (``"min"``) ``key``.

        Raises:
            KeyError: no such column (the message lists the columns); ValueError: another mode.
        """
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        values = self[key]
        pick = max if mode == "max" else min
        return self.records[values.index(pick(values))]

    def __repr__(self) -> str:
        flags = [f for f, on in ((", interrupted", self.interrupted), (", stopped early", self.stopped_early),
                                                  (", diverged", self.diverged)) if on]
        return f"History({len(self)} epochs{''.join(flags)})"


class EarlyStopping:
    """Follows one monitored number per epoch: says when it improved and when to stop.

    Args:
        monitor: "val_loss" or "train_loss" (lower is better), "val_acc" or "train_acc" (higher).
        patience: stop after this many epochs without improvement (None: never stop; the
            best epoch is still tracked for ``best.pt``).
        min_delta: the smallest change that counts as an improvement.

    Raises:
        ValueError: an unknown ``monitor`` or a ``patience`` below 1.
    """

    MODES = {"val_loss": "min", "train_loss": "min", "val_acc": "max", "train_acc": "max"}

    def __init__(self, monitor: str = "val_loss", patience: int | None = None, min_delta: float = 0.0):
        if monitor not in self.MODES:
            raise ValueError(f"monitor must be one of {sorted(self.MODES)}, got {monitor!r}")
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise ValueError(f"early_stopping_patience must be an integer >= 1 or None, got {patience!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.sign = 1.0 if self.MODES[monitor] == "max" else -1.0
        self.best_score, self.stale = -math.inf, 0

    def update(self, record: dict[str, float]) -> bool:
        """Take one epoch's record; return True when the monitored value improved."""
        score = self.sign * record[self.monitor]
        improved = score > self.best_score + self.min_delta
        self.best_score, self.stale = (score, 0) if improved else (self.best_score, self.stale + 1)
        return improved

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` epochs in a row brought no improvement."""
        return self.patience is not None and self.stale >= self.patience

    @property
    def best(self) -> float:
        """The best monitored value so far, in its own units."""
        return self.sign * self.best_score

    def state_dict(self) -> dict[str, float]:
        """``best_score`` (the best value times +1 for "max", -1 for "min") and ``stale_epochs``,
        for a checkpoint."""
        return {"best_score": self.best_score, "stale_epochs": self.stale}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what ``state_dict`` returned (missing entries: a fresh start)."""
        self.best_score, self.stale = state.get("best_score", -math.inf), state.get("stale_epochs", 0)


#: ``fit``'s growth rule: an epoch's mean training loss above this many times the first batch's loss
#: (and above log(num_classes)) counts as diverged
DIVERGENCE_FACTOR = 3.0



def divergence_reason(loss: float, stats: dict) -> str:
    """Why an epoch's mean training loss counts as diverged ("" when it does not).

    The rule: the loss is more than ``DIVERGENCE_FACTOR`` (3) times the first batch's loss of
    this ``fit`` call AND above log(num_classes), the cross-entropy of guessing uniformly at
    random. It is checked only where the logits are 2-D (num_classes is known). A learning model
    never averages a whole epoch above both its starting loss x3 and chance level."""
    first, classes = stats.get("first_loss"), stats.get("num_classes")
    if first is None or classes is None:
        return ""
    chance = math.log(classes)
    if loss > DIVERGENCE_FACTOR * first and loss > chance:
        return (f"its mean training loss {loss:.4g} is more than {DIVERGENCE_FACTOR:g}x the first batch's "
                f"loss ({first:.4g}) and above log({classes}) = {chance:.3f}, the loss of guessing at random")
    return ""


class _EndedEarly:
    """What both ways a run can end early share: the message, and the ``History`` of the finished epochs."""

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history


class TrainingDiverged(_EndedEarly, FloatingPointError):
    """``fit`` stopped because training diverged (a NaN/inf loss, or a loss that grew far above its start).

    Attributes:
        history: the ``History`` of the epochs that finished before (``history.diverged`` is True).
    """


class TrainingInterrupted(_EndedEarly, KeyboardInterrupt):
    """``fit`` was stopped (the notebook's stop button, Ctrl-C, or a test runner's time limit) after
    saving what had finished. It is a ``KeyboardInterrupt``, so it still stops the cell or script.

    Attributes:
        history: the ``History`` of the epochs that finished (``history.interrupted`` is True); in
            Jupyter, right after the cell stopped, it is ``sys.last_value.history``.
    """


def epoch_or_diverged(epoch: int, history: History, ckpt_dir: "Path | None", optimizer, stats: dict,
                      run: Callable[[], dict]) -> dict[str, float]:
    """``fit``'s divergence check around one epoch: ``run()`` it and return its record, or raise.

    Args:
        epoch: the epoch's number (1-based), for the message.
        history: the finished epochs (marked ``diverged`` when this one diverged).
        ckpt_dir: where ``fit`` writes checkpoints (None: nowhere), for the message.
        optimizer: its learning rates go into the message.
        stats: ``first_loss`` and ``num_classes`` for ``divergence_reason``. On several processes the first
            loss becomes the mean of the ranks' first losses (once), so every rank decides alike.
        run: trains and evaluates the epoch, returning its record (``train_loss`` ...).

    Raises:
        TrainingDiverged: the loss became non-finite during the epoch (a ``FloatingPointError`` from
            ``run``), or the epoch's mean training loss grew far above its start (``divergence_reason``);
            the diverged epoch is not kept.
    """
    try:
        record = run()
    except FloatingPointError as exc:
        raise diverged_error(f"the training loss became non-finite in epoch {epoch} ({exc})", optimizer,
                             history, ckpt_dir) from None
    if stats and is_distributed() and "first_loss" in stats and not stats.get("first_loss_reduced"):
        stats["first_loss"] = reduce_sums([stats["first_loss"]])[0] / world_size()
        stats["first_loss_reduced"] = True
    grown = divergence_reason(record["train_loss"], stats)
    if grown:
        raise diverged_error(f"training diverged in epoch {epoch}: {grown}", optimizer, history, ckpt_dir)
    return record


def diverged_error(what: str, optimizer, history: History, ckpt_dir: "Path | None") -> TrainingDiverged:
    """The ``TrainingDiverged`` for ``fit``: what happened, the learning rate(s), what was kept, what to try."""
    lrs = ", ".join(f"{g['lr']:.3g}" for g in optimizer.param_groups)
    history.diverged = True
    if not len(history):
        kept = "no epoch finished, so no checkpoint was written"
    else:
        kept = f"the {len(history)} finished epoch(s) are in this exception's .history"
        if ckpt_dir is not None:
            kept += f", and last.pt and best.pt in {ckpt_dir} hold the last finished and the best of them"
    return TrainingDiverged(
        f"Training stopped: {what}. Learning rate{'s' if len(optimizer.param_groups) > 1 else ''} at that "
        f"point: {lrs}. The diverged epoch was not kept; {kept}. Try: a lower learning rate (e.g. 10x lower), "
        "clipping gradients (max_grad_norm=1.0 in fit, --max-grad-norm 1 on the command line), and checking the "
        "inputs (normalised, no NaN or inf). Start a new run with the new settings (resuming keeps the saved ones).",
        history)
