"""Comparing models fairly: train each with ``fit`` on the same data, device and run, and keep one
row per model (test accuracy %, test loss, training seconds, parameters, the recipe).

The anchor courses' results tables (ZTM's ``results`` dicts) with two fixes: accuracy weighted by
samples (``fit`` counts per sample), and every row measured in the same process on one device,
so the seconds can be compared.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from torch import nn

from .history import History
from .models import count_parameters
from .training import fit

__all__ = ["RunResult", "results_table", "train_and_evaluate"]


@dataclass
class RunResult:
    """One trained model and what it measured.

    Attributes:
        name: the row's label, e.g. "TinyVGG".
        model: the trained model.
        history: ``fit``'s per-epoch records.
        recipe: how it was trained, in words (optimizer, schedule, batch size).
        extra: any further columns for the row (e.g. ``{"augment": "flip"}``).
    """

    name: str
    model: nn.Module
    history: History
    recipe: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def test_acc(self) -> float:
        """The last epoch's accuracy on the evaluation loader, %."""
        return self.history.last()["val_acc"]

    @property
    def test_loss(self) -> float:
        """The last epoch's loss on the evaluation loader."""
        return self.history.last()["val_loss"]

    def row(self) -> dict[str, Any]:
        """The table row: ``model``, ``test_acc`` (%), ``test_loss``, ``train_seconds``, ``params``,
        ``recipe`` and the ``extra`` columns (what ``plot_model_comparison`` takes)."""
        return {"model": self.name, "test_acc": self.test_acc, "test_loss": self.test_loss,
                "train_seconds": self.history.total_seconds, "params": count_parameters(self.model),
                "recipe": self.recipe, **self.extra}


def train_and_evaluate(name: str, model: nn.Module, train_loader: Iterable, test_loader: Iterable, *,
                       recipe: str = "", extra: dict[str, Any] | None = None, verbose: bool = True,
                       **fit_kwargs: Any) -> RunResult:
    """Train ``model`` with ``fit`` (evaluating on ``test_loader`` every epoch) and return its result.

    Args:
        name: the row's label.
        model, train_loader, test_loader: as ``fit``'s model, train_loader and val_loader.
        recipe: how it is trained, in words, for the table.
        extra: further columns for the row.
        verbose: print one line with the test accuracy and the training time.
        **fit_kwargs: passed to ``fit`` (``epochs``, ``optimizer``, ``scheduler`` — an instance
            or a factory ``(optimizer, total_steps) -> scheduler`` — ``device``, ``seed``, ...).

    Returns:
        the ``RunResult``; ``.row()`` is its table row.

    Raises:
        as ``fit``.
    """
    history = fit(model, train_loader, test_loader, **fit_kwargs)
    result = RunResult(name, model, history, recipe, dict(extra or {}))
    if verbose and len(history):
        print(f"{name}: test accuracy {result.test_acc:.2f} % in {history.total_seconds:.1f} s")
    return result


def results_table(rows: Sequence[dict[str, Any]] | Sequence[RunResult]) -> str:
    """A fixed-width text table of result rows: model, test accuracy (%), test loss, training
    seconds, parameters and recipe, one line per model, in the order given.

    Raises:
        ValueError: no rows.
    """
    rows = [r.row() if isinstance(r, RunResult) else r for r in rows]
    if not rows:
        raise ValueError("no results to tabulate")
    width = max(24, *(len(r["model"]) for r in rows))
    lines = [f"{'model':{width}s} {'test acc':>9s} {'test loss':>10s} {'train s':>8s} {'params':>9s}  recipe"]
    for r in rows:
        lines.append(f"{r['model']:{width}s} {r['test_acc']:8.2f}% {r['test_loss']:10.4f} {r['train_seconds']:8.1f} "
                     f"{r['params']:9,d}  {r.get('recipe', '')}")
    return "\n".join(lines)
