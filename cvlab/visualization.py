"""Plots for the lessons. Every function returns its matplotlib ``Figure`` and never calls
``plt.show()``: a notebook displays the returned figure, a script can ``fig.savefig(...)``.

Images may be given as a tensor or array shaped (N, C, H, W) (C = 1 or 3), (N, H, W), or a single
(C, H, W) / (H, W) image; uint8 in [0, 255] or float in [0, 1] (``normalize=True`` rescales
anything else, such as feature maps, to [0, 1] per image); ``cvlab.images.images_to_numpy``
checks and converts them.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .detection import filter_detections, match_detections
from .images import images_to_numpy

__all__ = ["draw_detections", "overlay_heatmap", "plot_confusion_matrix", "plot_detections", "plot_heatmaps",
           "plot_history", "plot_model_comparison", "plot_predictions", "show_images"]

#: colours of lesson 06's detection figures
TP_COLOR, FP_COLOR, MISS_COLOR = "lime", "red", "orange"


def _one_each(n: int, things: str, thing: str, **sequences) -> None:
    """ValueError unless every given sequence has one entry per thing (n of them); None is skipped."""
    for name, seq in sequences.items():
        if seq is not None and len(seq) != n:
            raise ValueError(f"{n} {things} but {len(seq)} {name}: give one per {thing}")


def _grid(n: int, ncols: int, size: float) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def show_images(images, labels: Sequence[int] | torch.Tensor | None = None,
                class_names: Sequence[str] | None = None, *, titles: Sequence[str] | None = None,
                ncols: int = 8, title: str | None = None, normalize: bool = False,
                cmap: str = "gray", size: float = 1.5) -> Figure:
    """A grid of images, each titled with its label (class name if given) or a title of its own.

    Args:
        images: see the module docstring.
        labels: one class index per image.
        class_names: names for the class indices.
        titles: one title per image (wins over labels).
        ncols: images per row.
        title: the figure's title.
        normalize: rescale each image to [0, 1] (for feature maps and other unbounded values).
        cmap: colour map for single-channel images.
        size: inches per image.

    Raises:
        as ``images_to_numpy``; ValueError if labels or titles do not match the images in number.
    """
    arr = images_to_numpy(images, normalize=normalize)
    n = len(arr)
    _one_each(n, "images", "image", labels=labels, titles=titles)
    fig, axes = _grid(n, ncols, size)
    for i, ax in enumerate(axes.flat[:n]):
        img = arr[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap=cmap, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
        elif labels is not None:
            lab = int(labels[i])
            ax.set_title(class_names[lab] if class_names is not None else str(lab), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(history, title: str = "Training curves") -> Figure:
    """Loss and accuracy (%) per epoch, for training and (if measured) validation.

    Args:
        history: a ``cvlab.training.History`` (or a list of per-epoch dicts with ``epoch``,
            ``train_loss``, ``train_acc`` and optionally ``val_loss``, ``val_acc``).
    """
    records = getattr(history, "records", history)
    if not records:
        raise ValueError("the history is empty: train for at least one epoch first")
    epochs = [r["epoch"] for r in records]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.5))
    for split, style in (("train", "-o"), ("val", "--o")):
        if f"{split}_loss" in records[0]:
            ax_l.plot(epochs, [r[f"{split}_loss"] for r in records], style, label=split)
            ax_a.plot(epochs, [r[f"{split}_acc"] for r in records], style, label=split)
    ax_l.set(title="Loss", xlabel="epoch", ylabel="cross-entropy loss (nats)")
    ax_a.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_l, ax_a):
        ax.legend()
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], *, normalize: bool = False,
                          title: str = "Confusion matrix") -> Figure:
    """A confusion matrix as a heat map with counts (or row percentages) in the cells.

    Args:
        cm: (K, K) counts, rows true class, columns predicted (``cvlab.metrics.confusion_matrix``).
        class_names: K names.
        normalize: show each row as % of that class's samples (recall on the diagonal).

    Raises:
        ValueError: ``cm`` not square or not matching ``class_names``.
    """
    cm = np.asarray(cm)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"cm must be ({k}, {k}) for {k} class names, got shape {cm.shape}")
    shown = 100 * cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(0.6 * k + 2.5, 0.6 * k + 2))
    im = ax.imshow(shown, cmap="Blues")
    fig.colorbar(im, ax=ax, label="% of true class" if normalize else "number of images")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    thresh = shown.max() / 2 if shown.size else 0
    for i in range(k):
        for j in range(k):
            txt = f"{shown[i, j]:.0f}" if not normalize else f"{shown[i, j]:.1f}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > thresh else "black")
    fig.tight_layout()
    return fig


def plot_predictions(images, y_true, probs: torch.Tensor, class_names: Sequence[str], *,
                     ncols: int = 6, title: str = "Predictions (green: right, red: wrong)",
                     size: float = 1.8) -> Figure:
    """Images titled "predicted (confidence %) / true", green when right and red when wrong.

    Args:
        images: see the module docstring.
        y_true: (N,) true class indices.
        probs: (N, K) class probabilities (softmax of the logits).
        class_names: K names.

    Raises:
        as ``images_to_numpy``; ValueError when the lengths disagree.
    """
    arr = images_to_numpy(images)
    probs = torch.as_tensor(probs)
    y_true = torch.as_tensor(y_true)
    if not (len(arr) == len(y_true) == len(probs)):
        raise ValueError(f"got {len(arr)} images, {len(y_true)} labels and {len(probs)} rows of "
                         "probabilities; give one of each per image")
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ValueError(f"probs must be (N, {len(class_names)}), got {tuple(probs.shape)}")
    conf, pred = probs.max(dim=1)
    fig, axes = _grid(len(arr), ncols, size)
    for i, ax in enumerate(axes.flat[:len(arr)]):
        img = arr[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        right = int(pred[i]) == int(y_true[i])
        ax.set_title(f"{class_names[int(pred[i])]} ({100 * float(conf[i]):.0f}%)\ntrue: {class_names[int(y_true[i])]}",
                     fontsize=7, color="green" if right else "red")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_model_comparison(results: Sequence[dict], *, metric: str = "test_acc",
                          metric_label: str = "test accuracy (%)", time_key: str = "train_seconds",
                          title: str = "Model comparison (same device, same run)") -> Figure:
    """Bar charts of a metric and of training time per model.

    Args:
        results: one dict per model with ``model`` (name), ``metric`` and ``time_key`` entries.
        metric: key of the quality metric (higher is better).
        time_key: key of the training time in seconds.

    Raises:
        ValueError: no results, or a result without the keys asked for.
    """
    if not results:
        raise ValueError("no results to compare")
    for r in results:
        missing = [k for k in ("model", metric, time_key) if k not in r]
        if missing:
            raise ValueError(f"result {r} lacks {missing}")
    names = [r["model"] for r in results]
    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(10, 0.5 * len(names) + 2))
    bars = ax_m.barh(names, [r[metric] for r in results], color="tab:blue")
    ax_m.bar_label(bars, fmt="%.1f", padding=2)
    lo = min(r[metric] for r in results)
    ax_m.set(xlabel=metric_label, title=metric_label, xlim=(max(0, lo - 10), 100 if "acc" in metric else None))
    bars = ax_t.barh(names, [r[time_key] for r in results], color="tab:orange")
    ax_t.bar_label(bars, fmt="%.1f", padding=2)
    ax_t.set(xlabel="training time (s)", title="Training time")
    for ax in (ax_m, ax_t):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def overlay_heatmap(image, heatmap, *, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """A heat map blended over an image, as pytorch-grad-cam's ``show_cam_on_image`` does.

    Args:
        image: one image, (C, H, W) or (H, W), uint8 or float in [0, 1] (see the module
            docstring; undo ``Normalize`` first with ``cvlab.transforms.denormalize``).
        heatmap: (h, w) tensor or array in [0, 1] (a Grad-CAM, saliency or scaled occlusion
            map); resized to the image's H x W (bilinear) if it differs.
        alpha: weight of the heat map, in [0, 1].
        cmap: a matplotlib colormap name.

    Returns:
        float array (H, W, 3) in [0, 1]: ``(1 - alpha) * image + alpha * cmap(heatmap)``.

    Raises:
        ValueError: a heat map that is not 2-D or has values outside [0, 1] (scale it, e.g.
            ``(m - m.min()) / (m.max() - m.min())``), or an ``alpha`` outside [0, 1].
    """
    arr = images_to_numpy(image)
    if len(arr) != 1:
        raise ValueError(f"give one image, got a batch of {len(arr)}")
    img = arr[0]
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
    hm = torch.as_tensor(np.asarray(heatmap.detach().cpu() if isinstance(heatmap, torch.Tensor) else heatmap),
                         dtype=torch.float32)
    if hm.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (h, w), got shape {tuple(hm.shape)}; take one map of a batch, maps[0]")
    if hm.numel() and (float(hm.min()) < -1e-6 or float(hm.max()) > 1 + 1e-6):
        raise ValueError(f"heatmap values must be in [0, 1], got [{float(hm.min()):.3g}, {float(hm.max()):.3g}]; "
                         "scale it first, e.g. (m - m.min()) / (m.max() - m.min())")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if tuple(hm.shape) != img.shape[:2]:
        hm = torch.nn.functional.interpolate(hm[None, None], size=img.shape[:2], mode="bilinear",
                                             align_corners=False)[0, 0].clamp(0, 1)
    colored = plt.get_cmap(cmap)(hm.numpy())[..., :3]
    return ((1 - alpha) * img + alpha * colored).astype(np.float32)


def plot_heatmaps(image, heatmaps: dict, *, alpha: float = 0.5, cmap: str = "jet", title: str | None = None,
                  size: float = 2.6, colorbar_label: str = "relevance (0 = none, 1 = most)") -> Figure:
    """The image, then one overlay per heat map, titled, with a shared colour bar.

    Args:
        image: as ``overlay_heatmap``.
        heatmaps: title -> (h, w) map in [0, 1], e.g. {"Grad-CAM: tabby (54 %)": cam[0]}.
        alpha, cmap: as ``overlay_heatmap``.
        title: the figure's title.
        size: inches per panel.
        colorbar_label: what the colours mean (with units).

    Raises:
        ValueError: no heat maps, or as ``overlay_heatmap``.
    """
    if not heatmaps:
        raise ValueError("give at least one heat map: {title: map}")
    n = len(heatmaps) + 1
    fig, axes = plt.subplots(1, n, figsize=(size * n + 0.6, size + 0.5), squeeze=False)
    axes = axes[0]
    img = images_to_numpy(image)[0]
    axes[0].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"image ({img.shape[1]}x{img.shape[0]} px)", fontsize=8)
    for ax, (name, hm) in zip(axes[1:], heatmaps.items()):
        ax.imshow(overlay_heatmap(image, hm, alpha=alpha, cmap=cmap))
        ax.set_title(name, fontsize=8)
    for ax in axes:
        ax.axis("off")
    mappable = plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap=cmap)
    fig.colorbar(mappable, ax=list(axes), fraction=0.02, pad=0.01, label=colorbar_label)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def draw_detections(image, boxes, labels=None, class_names: Sequence[str] | None = None, scores=None, *,
                    colors="lime", width: int = 2, font_size: int | None = None) -> torch.Tensor:
    """Boxes drawn on an image with ``torchvision.utils.draw_bounding_boxes``, captioned
    "name score" when labels (and scores) are given.

    Args:
        image: one image (C, H, W) or (H, W), uint8 [0, 255] or float [0, 1]; gray is drawn as RGB.
        boxes: (N, 4) XYXY pixels.
        labels: (N,) class ids, named through ``class_names`` when given.
        scores: (N,) in [0, 1], shown with two decimals.
        colors: one colour for all boxes, or one per box (names or RGB tuples).
        width: line width, pixels.
        font_size: caption size, pixels (None: torchvision's default font).

    Returns:
        uint8 (3, H, W), the image with the boxes.

    Raises:
        as ``images_to_numpy``; ValueError if labels or scores do not match the boxes in number.
    """
    from torchvision.utils import draw_bounding_boxes

    arr = images_to_numpy(image)[0]
    img = torch.from_numpy((arr * 255).round().astype(np.uint8)).permute(2, 0, 1)
    if img.shape[0] == 1:
        img = img.repeat(3, 1, 1)
    boxes = torch.as_tensor(boxes).as_subclass(torch.Tensor).float().reshape(-1, 4)
    _one_each(len(boxes), "boxes", "box", labels=labels, scores=scores)
    if len(boxes) == 0:  # nothing to draw (torchvision would warn)
        return img
    captions = None
    if labels is not None:
        names = [class_names[int(c)] if class_names is not None else str(int(c)) for c in labels]
        captions = [f"{n} {float(s):.2f}" for n, s in zip(names, scores)] if scores is not None else names
    font = None
    if font_size:  # torchvision needs a TrueType file for sized captions: matplotlib's own DejaVu Sans
        from matplotlib import font_manager
        font = font_manager.findfont("DejaVu Sans")
    return draw_bounding_boxes(img, boxes, labels=captions, colors=colors, width=width, font_size=font_size, font=font)


def plot_detections(images, predictions: Sequence[dict] | None = None, targets: Sequence[dict] | None = None,
                    class_names: Sequence[str] | None = None, *, score_threshold: float = 0.5,
                    iou_threshold: float = 0.5, ncols: int = 4, title: str | None = None,
                    size: float = 2.5) -> Figure:
    """A grid of images with their detections and true boxes.

    With predictions and targets, each detection scoring at least ``score_threshold`` is matched
    to the true boxes as COCO does (``cvlab.detection.match_detections``): true positives are
    green, false positives red, and true boxes no detection found (misses) orange; each title
    counts them. With only one of the two, its boxes are drawn in green.

    Args:
        images: (N, C, H, W) or a list of (C, H, W), uint8 or float in [0, 1].
        predictions: per image ``boxes`` (XYXY pixels), ``scores``, ``labels``.
        targets: per image ``boxes`` and ``labels``.
        class_names: names indexed by label (captions on predictions).
        score_threshold: detections below it are not drawn, in [0, 1].
        iou_threshold: the IoU a detection needs with a true box of its class to count as found.
        ncols, title, size: grid columns, figure title, inches per image.

    Raises:
        ValueError: predictions or targets not one per image.
    """
    n = len(images)
    _one_each(n, "images", "image", predictions=predictions, targets=targets)
    fig, axes = _grid(n, ncols, size)
    for i, ax in enumerate(axes.flat[:n]):
        pred = filter_detections(predictions[i], score_threshold) if predictions is not None else None
        tgt = targets[i] if targets is not None else None
        if pred is not None and tgt is not None:
            true_positive, matched = match_detections(pred, tgt, iou_threshold)
            boxes = torch.cat([pred["boxes"].float(), tgt["boxes"].as_subclass(torch.Tensor).float()[~matched]])
            colors = [TP_COLOR if t else FP_COLOR for t in true_positive.tolist()] + [MISS_COLOR] * int((~matched).sum())
            labels = torch.cat([pred["labels"], tgt["labels"][~matched]])
            ax.set_title(f"{int(true_positive.sum())} TP · {int((~true_positive).sum())} FP · "
                         f"{int((~matched).sum())} missed", fontsize=8)
        else:
            shown = pred if pred is not None else tgt
            boxes, labels = shown["boxes"].as_subclass(torch.Tensor).float(), shown["labels"]
            colors = TP_COLOR
        drawn = draw_detections(images[i], boxes, labels if class_names is not None else None, class_names,
                                colors=colors, width=1)
        ax.imshow(drawn.permute(1, 2, 0).numpy())
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
