"""Classification metrics: predictions, accuracy, confusion matrix, per-class report.

Accuracy is counted per sample. Everything past accuracy comes from scikit-learn
(``sklearn.metrics``), the well-kept reference; these functions only adapt tensors to it and
report percentages.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
from sklearn import metrics as skm
from torch import nn

from .utils import get_device, model_mode

__all__ = ["Predictions", "accuracy", "classification_report", "confusion_matrix", "most_confused",
           "per_class_metrics", "predict"]


def _as_labels(y, name: str) -> np.ndarray:
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {arr.shape}; "
                         "for logits or probabilities take .argmax(dim=1) first")
    return arr


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}: they must match one to one")
    if len(t) == 0:
        raise ValueError("no labels given")
    return t, p


def accuracy(y_true: torch.Tensor | Sequence[int], y_pred: torch.Tensor | Sequence[int]) -> float:
    """Share of samples whose predicted class equals the true class, in % (0-100).

    Args:
        y_true, y_pred: 1-D integer class indices of equal length (tensors, arrays or lists).

    Raises:
        ValueError: different lengths, no samples, or not 1-D.
    """
    t, p = _pair(y_true, y_pred)
    return float(100.0 * (t == p).mean())


class Predictions(NamedTuple):
    """What ``predict`` returns: outputs first, then labels, as everywhere in cvlab.

    Attributes:
        probs: float32 (N, num_classes) softmax probabilities on the CPU, rows summing to 1.
        labels: int64 (N,) true class indices from the loader.
    """

    probs: torch.Tensor
    labels: torch.Tensor

    @property
    def preds(self) -> torch.Tensor:
        """int64 (N,) predicted classes: ``probs.argmax(1)``."""
        return self.probs.argmax(1)


@torch.inference_mode()
def predict(model: nn.Module, loader: Iterable, device: torch.device | str | None = None) -> Predictions:
    """Run ``model`` over ``loader`` in eval mode (then back in its mode) and collect its predictions.

    Args:
        model: a classifier returning logits (B, num_classes); moved to ``device``.
        loader: yields ``(x, y)`` batches.
        device: where to run; None picks CUDA, then MPS, then CPU.

    Returns:
        ``Predictions(probs, labels)``, with ``.preds`` the predicted classes;
        ``probs, labels = predict(...)`` unpacks it.

    Raises:
        ValueError: the loader yielded no batches.
    """
    device = get_device(device)
    ys, ps = [], []
    with model_mode(model.to(device), False):
        for x, y in loader:
            ps.append(torch.softmax(model(x.to(device)), dim=1).float().cpu())
            ys.append(torch.as_tensor(y).long().cpu())
    if not ys:
        raise ValueError("the loader yielded no batches")
    return Predictions(torch.cat(ps), torch.cat(ys))


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Confusion matrix from ``sklearn.metrics.confusion_matrix``: rows true, columns predicted.

    Returns:
        int64 array (num_classes, num_classes); entry [i, j] counts samples of class i
        predicted as j. Every class gets a row and a column, even one never seen.
    """
    t, p = _pair(y_true, y_pred)
    return skm.confusion_matrix(t, p, labels=list(range(num_classes)))


def classification_report(y_true, y_pred, class_names: Sequence[str], digits: int = 3) -> str:
    """scikit-learn's text report: precision, recall, F1 and support per class, plus averages."""
    t, p = _pair(y_true, y_pred)
    return skm.classification_report(t, p, labels=list(range(len(class_names))),
                                     target_names=list(class_names), digits=digits, zero_division=0)


def per_class_metrics(y_true, y_pred, class_names: Sequence[str]) -> list[dict]:
    """Precision, recall and F1 per class in %, from ``sklearn.metrics.precision_recall_fscore_support``.

    Returns:
        one dict per class, in class order: ``class``, ``precision``, ``recall``, ``f1`` (%)
        and ``support`` (number of true samples).
    """
    t, p = _pair(y_true, y_pred)
    prec, rec, f1, sup = skm.precision_recall_fscore_support(
        t, p, labels=list(range(len(class_names))), zero_division=0)
    return [{"class": name, "precision": 100 * float(prec[i]), "recall": 100 * float(rec[i]),
             "f1": 100 * float(f1[i]), "support": int(sup[i])} for i, name in enumerate(class_names)]


def most_confused(cm: np.ndarray, class_names: Sequence[str], k: int = 5) -> list[tuple[str, str, int]]:
    """The ``k`` largest off-diagonal cells of a confusion matrix.

    Returns:
        ``(true class, predicted class, count)`` triples, largest count first; pairs with a
        count of 0 are left out.

    Raises:
        ValueError: ``cm`` is not square or does not match ``class_names``.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"cm must be square with one row per class ({len(class_names)}), got shape {cm.shape}")
    off = [(int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    off.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(class_names[i], class_names[j], n) for n, i, j in off[:k]]
