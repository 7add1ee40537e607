"""Semantic segmentation: masks as data, losses, training, metrics and overlays (lesson 07; the
models are in ``cvlab.segmenters``).

A semantic mask is an int64 (H, W) tensor of class indices, 0 the background, ``IGNORE_INDEX``
(255) for pixels that count for nothing (unlabelled borders, padding). Models return logits
(B, num_classes, H, W), or torchvision's dict ``{"out": logits}``. Metrics come from torchmetrics
(``MulticlassJaccardIndex`` for IoU, as the course's rules ask); lesson 07 writes the confusion
matrix and IoU from scratch and checks them against it.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .images import images_to_numpy
from .transforms import IMAGENET_MEAN, IMAGENET_STD
from .utils import get_device, model_mode, progress_bar

__all__ = ["IGNORE_INDEX", "check_mask", "class_colors", "dice_loss", "draw_errors", "draw_mask",
           "error_mask", "evaluate", "plot_segmentation", "predict_masks", "segmentation_tensors", "semantic_mask",
           "train_one_epoch"]

#: mask value for pixels that no loss or metric counts
IGNORE_INDEX = 255


def check_mask(mask: torch.Tensor, image_size: tuple[int, int], num_classes: int, *,
               ignore_index: int = IGNORE_INDEX, where: str = "the mask") -> None:
    """Check a semantic mask against its image and the classes.

    Raises:
        TypeError: not a tensor.
        ValueError: a float mask (class indices are integers), a 3-channel or other non-(H, W)
            mask, another size than the image (resize masks with nearest-neighbour interpolation,
            which ``transforms.v2`` does for ``tv_tensors.Mask``), or values outside
            [0, num_classes) other than ``ignore_index``. Each message says how to fix it.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{where} must be a tensor (H, W) of class indices, got {type(mask).__name__}")
    if mask.is_floating_point():
        raise ValueError(f"{where} is {mask.dtype}: masks hold class indices, convert with mask.long() (and never "
                         "resize a mask bilinearly: that invents classes between two others)")
    if mask.dim() == 3 and mask.shape[0] in (1, 3):
        hint = "mask[0]" if mask.shape[0] == 1 else "a palette lookup (a colour per class) or mask[0] for a gray mask"
        raise ValueError(f"{where} has shape {tuple(mask.shape)}: a semantic mask is (H, W); use {hint}")
    if mask.dim() != 2:
        raise ValueError(f"{where} must be (H, W), got shape {tuple(mask.shape)}")
    if tuple(mask.shape) != tuple(image_size):
        raise ValueError(f"{where} is {tuple(mask.shape)} but its image is {tuple(image_size)} (H, W): resize both with "
                         "transforms.v2 (masks as tv_tensors.Mask are resized with nearest-neighbour interpolation)")
    bad = ((mask < 0) | (mask >= num_classes)) & (mask != ignore_index)
    if bad.any():
        values = sorted(set(mask[bad].unique().tolist()))[:5]
        raise ValueError(f"{where} holds {values}, outside 0..{num_classes - 1} and not the ignore index "
                         f"{ignore_index}: give every pixel a class index (0 = background) or the ignore index")


def semantic_mask(target: dict, image_size: tuple[int, int]) -> torch.Tensor:
    """A scene's class map from its instance masks: int64 (H, W), 0 the background and each
    object's pixels its label (``cvlab.scenes`` targets: ``masks`` (K, H, W) bool, ``labels`` (K,))."""
    out = torch.zeros(image_size, dtype=torch.int64)
    for m, label in zip(target["masks"], target["labels"].tolist()):
        out[m.bool()] = label
    return out


def segmentation_tensors(scenes: Sequence[tuple[torch.Tensor, dict]], *,
                         imagenet_normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes (``cvlab.scenes``) as two tensors for a ``TensorDataset``.

    Args:
        scenes: ``(image, target)`` pairs, images uint8 (1 or 3, H, W) of one size, targets with
            ``masks`` (K, H, W) bool and ``labels`` (K,).
        imagenet_normalize: subtract ImageNet's mean and divide by its std (for a pretrained backbone).

    Returns:
        images float32 (N, 3, H, W) (gray repeated to RGB; in [0, 1] unless normalised) and masks
        int64 (N, H, W) from ``semantic_mask``.

    Raises:
        ValueError: no scenes, or images of different sizes.
    """
    if len(scenes) == 0:
        raise ValueError("no scenes: make some with cvlab.scenes.make_scenes or fashion_mnist_scenes")
    sizes = {tuple(img.shape[-2:]) for img, _ in scenes}
    if len(sizes) > 1:
        raise ValueError(f"scenes of different sizes {sorted(sizes)}: resize them to one size first")
    images = torch.stack([img.as_subclass(torch.Tensor).expand(3, -1, -1) for img, _ in scenes]).float().div(255)
    if imagenet_normalize:
        images = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    masks = torch.stack([semantic_mask(t, img.shape[-2:]) for img, t in scenes])
    return images, masks


def _logits(output: Any) -> torch.Tensor:
    return output["out"] if isinstance(output, dict) else output


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = IGNORE_INDEX,
              smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss (Milletari et al. 2016, V-Net, arXiv:1606.04797), averaged over classes:
    1 - mean_c (2 |P_c ∩ T_c| + smooth) / (|P_c| + |T_c| + smooth) with P the softmax probabilities.

    Args:
        logits: float (B, C, H, W).
        target: int64 (B, H, W) class indices; ``ignore_index`` pixels are left out.
        smooth: added to numerator and denominator (a class absent from both scores 1).

    Returns:
        a scalar in [0, 1].
    """
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * valid
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + smooth) / (total + smooth)).mean()


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, loss_fn,
                    device: torch.device | str | None = None, *, scheduler: Any = None,
                    progress: bool = False) -> float:
    """One pass over ``loader`` of ``(images, masks)`` batches (float32 (B, C, H, W), int64 (B, H, W)).

    Returns:
        the mean loss per batch; the model's mode is restored.

    Raises:
        ValueError: no batches. FloatingPointError: a NaN or infinite loss (lower the learning rate).
    """
    device = get_device(device)
    total, batches = 0.0, 0
    with model_mode(model.to(device), True):
        for images, masks in progress_bar(loader, desc="train", enabled=progress):
            loss = loss_fn(_logits(model(images.to(device))), masks.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} in batch {batches + 1}: lower the learning rate")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total, batches = total + loss.item(), batches + 1
    if batches == 0:
        raise ValueError("the loader yielded no batches")
    return total / batches


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device | str | None = None, *,
             ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """Pixel accuracy, per-class IoU and mIoU with torchmetrics (``MulticlassJaccardIndex``,
    ``MulticlassAccuracy``; ``ignore_index`` pixels left out).

    Returns:
        ``miou`` and ``pixel_acc`` (floats in [0, 1]) and ``iou_per_class`` (list of num_classes
        floats; NaN for a class absent from both truth and prediction); the model's mode is restored.

    Raises:
        ValueError: no batches.
    """
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    device = get_device(device)
    iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=ignore_index, zero_division=float("nan"))
    acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index)
    batches = 0
    with model_mode(model.to(device), False):
        for images, masks in loader:
            pred = _logits(model(images.to(device))).argmax(1).cpu()
            iou.update(pred, masks)
            acc.update(pred, masks)
            batches += 1
    if batches == 0:
        raise ValueError("the loader yielded no batches")
    per_class = iou.compute()
    return {"miou": float(per_class.nanmean()), "pixel_acc": float(acc.compute()), "iou_per_class": per_class.tolist()}


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """One RGB colour (0..255 each) per class: black for the background (0), then matplotlib's
    tab10 with its gray swapped for yellow (tab20 beyond 10 classes). Raises ValueError for
    num_classes outside 1..21."""
    from matplotlib import colormaps

    if not 1 <= num_classes <= 21:
        raise ValueError(f"num_classes must be 1..21 for the built-in palette, got {num_classes}: pass your own colours")
    cmap = colormaps["tab10" if num_classes <= 11 else "tab20"]
    colors = [tuple(int(round(255 * v)) for v in cmap(i)[:3]) for i in range(num_classes - 1)]
    if num_classes <= 11 and num_classes > 8:
        colors[7] = (255, 230, 0)              # tab10's gray would vanish on gray images: yellow instead
    return [(0, 0, 0)] + colors


def draw_mask(image, mask: torch.Tensor, num_classes: int, *, alpha: float = 0.6,
              classes: Sequence[int] | None = None, colors: Sequence | None = None) -> torch.Tensor:
    """A semantic mask painted over its image with ``torchvision.utils.draw_segmentation_masks``.

    Args:
        image: (C, H, W) or (H, W), uint8 [0, 255] or float [0, 1]; gray is drawn as RGB.
        mask: int64 (H, W) class indices (``IGNORE_INDEX`` pixels are left unpainted).
        num_classes: classes including the background.
        alpha: opacity of the paint, 0 (invisible) to 1 (opaque).
        classes: the classes to paint (default: all but the background 0).
        colors: one colour per class (default ``class_colors``).

    Returns:
        uint8 (3, H, W).

    Raises:
        ValueError: alpha outside [0, 1]; as ``check_mask`` for a mask that does not fit the image.
    """
    from torchvision.utils import draw_segmentation_masks

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha is the paint's opacity, 0..1, got {alpha}")
    img = torch.from_numpy((images_to_numpy(image)[0] * 255).round().astype("uint8")).permute(2, 0, 1)
    img = img.repeat(3, 1, 1) if img.shape[0] == 1 else img
    check_mask(mask, tuple(img.shape[-2:]), num_classes)
    colors = list(colors) if colors is not None else class_colors(num_classes)
    classes = [c for c in (range(1, num_classes) if classes is None else classes) if bool((mask == c).any())]
    if not classes or alpha == 0:
        return img
    masks = torch.stack([mask == c for c in classes])
    return draw_segmentation_masks(img, masks, alpha=alpha, colors=[tuple(colors[c]) for c in classes])


def error_mask(prediction: torch.Tensor, target: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """bool (H, W) (or (B, H, W)): True where the predicted class differs from the true one
    (``ignore_index`` pixels are never errors). Raises ValueError for shapes that differ."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must have one shape")
    return (prediction != target) & (target != ignore_index)


#: the colour of wrong pixels in error maps (RGB)
ERROR_COLOR = (230, 30, 30)


def draw_errors(image, prediction: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.8) -> torch.Tensor:
    """The wrong pixels (``error_mask``) painted in ``ERROR_COLOR`` over the image: uint8 (3, H, W).
    Raises as ``error_mask`` and ``draw_mask``."""
    wrong = error_mask(prediction, target)
    return draw_mask(image, wrong.long(), 2, alpha=alpha, colors=[(0, 0, 0), ERROR_COLOR])


@torch.no_grad()
def predict_masks(model: nn.Module, images: torch.Tensor, *, batch_size: int = 100,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """The predicted class of every pixel: int64 (N, H, W) from float32 images (N, C, H, W)
    (argmax of the logits, in batches; the model's mode is restored)."""
    device = get_device(device)
    with model_mode(model.to(device), False):
        return torch.cat([_logits(model(images[i:i + batch_size].to(device))).argmax(1).cpu()
                          for i in range(0, len(images), batch_size)])


def plot_segmentation(images, targets: torch.Tensor, predictions: torch.Tensor | None, class_names: Sequence[str], *,
                      alpha: float = 0.6, size: float = 1.9, title: str | None = None):
    """A figure, one column per image: the image, the true mask over it, the predicted mask over
    it and the wrong pixels in red, with a legend of the class colours.

    Args:
        images: (N, C, H, W) or (N, H, W), uint8 or float [0, 1] (undo any normalisation first).
        targets: int64 (N, H, W) true masks; predictions: the same for the predictions, or None
            to draw only the truth.
        class_names: num_classes names, the background first.

    Returns:
        a matplotlib Figure. Raises as ``draw_mask``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    k = len(class_names)
    colors = class_colors(k)
    rows = [("truth", targets)] + ([("prediction", predictions), ("errors", None)] if predictions is not None else [])
    fig, axes = plt.subplots(len(rows) + 1, len(targets), figsize=(size * len(targets), size * (len(rows) + 1) + 0.6),
                             squeeze=False)
    for j in range(len(targets)):
        arr = images_to_numpy(images[j])[0]
        axes[0, j].imshow(arr[..., 0] if arr.shape[-1] == 1 else arr, cmap="gray", vmin=0, vmax=1)
        for i, (name, masks) in enumerate(rows, start=1):
            if name == "errors":
                drawn = draw_errors(images[j], predictions[j], targets[j])
                wrong = float(error_mask(predictions[j], targets[j]).float().mean())
                axes[i, j].set_title(f"{wrong * 100:.1f} % wrong", fontsize=8)
            else:
                drawn = draw_mask(images[j], masks[j], k, alpha=alpha, colors=colors)
            axes[i, j].imshow(drawn.permute(1, 2, 0).numpy())
    for i, name in enumerate(["image"] + [r[0] for r in rows]):
        axes[i, 0].set_ylabel(name)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(handles=[Patch(color=[v / 255 for v in colors[c]], label=class_names[c]) for c in range(1, k)],
               loc="lower center", ncol=min(5, k - 1), fontsize=8, frameon=False)
    fig.suptitle(title or "semantic masks: truth, prediction and wrong pixels", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
