"""Training and evaluating torchvision's detection models: target checks, ``train_one_epoch`` and
``evaluate`` in the shape of torchvision's ``references/detection/engine.py``, and COCO mAP from
torchmetrics' ``MeanAveragePrecision`` (pycocotools backend).

A detection model (Faster R-CNN, RetinaNet, FCOS, SSD, ...) takes a list of images, float32
(C, H, W) in [0, 1], and, in train mode, a list of targets: dicts with ``boxes`` float32 (K, 4)
XYXY in pixels and ``labels`` int64 (K,) in 1..num_classes (0 is the background). In train mode
it returns a dict of losses; in eval mode one dict per image with ``boxes``, ``scores`` and
``labels``. ``check_target`` turns the errors a model would give deep inside (or not at all) into
a message that names the image and what is wrong.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .utils import get_device, model_mode, progress_bar

__all__ = ["check_images", "check_target", "confused_classes", "evaluate", "filter_detections",
           "match_detections", "train_one_epoch"]


def check_target(target: dict, image_size: tuple[int, int], num_classes: int, where: str = "the target") -> None:
    """Check one detection target against the conventions of torchvision's detection models.

    Args:
        target: a dict with ``boxes`` (K, 4) XYXY pixels, ``labels`` (K,) and optionally ``masks``
            (K, H, W) bool or uint8.
        image_size: (H, W) of its image, pixels.
        num_classes: the number of object classes; labels must be in 1..num_classes.
        where: how to name the target in a message (e.g. "target 3 of the batch").

    Raises:
        ValueError: boxes not (K, 4); a box with x2 <= x1 or y2 <= y1; a box outside the image;
            labels of another length than the boxes; a label 0 (the background) or above
            num_classes; masks that are float, not 3-D, of another count or size. Each message
            names ``where``, the first bad box or label, and the fix.
        TypeError: ``target`` is not a dict with tensors.
    """
    if not isinstance(target, dict) or not isinstance(target.get("boxes"), torch.Tensor) \
            or not isinstance(target.get("labels"), torch.Tensor):
        raise TypeError(f"{where} must be a dict with tensors 'boxes' (K, 4) and 'labels' (K,), got "
                        f"{type(target).__name__} with keys {sorted(target) if isinstance(target, dict) else '-'}")
    boxes, labels = target["boxes"], target["labels"]
    h, w = image_size
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: boxes must have shape (K, 4), one XYXY row per object, got {tuple(boxes.shape)}")
    if len(labels) != len(boxes) or labels.dim() != 1:
        raise ValueError(f"{where}: {len(boxes)} boxes but labels of shape {tuple(labels.shape)}: give one label "
                         "per box")
    flat = boxes.as_subclass(torch.Tensor) if hasattr(boxes, "as_subclass") else boxes
    empty = (flat[:, 2] <= flat[:, 0]) | (flat[:, 3] <= flat[:, 1])
    if empty.any():
        i = int(torch.nonzero(empty)[0])
        raise ValueError(f"{where}: box {i} {flat[i].tolist()} has x2 <= x1 or y2 <= y1: boxes are XYXY (left, top, "
                         "right, bottom); convert XYWH or CXCYWH boxes with torchvision.ops.box_convert")
    outside = (flat[:, 0] < 0) | (flat[:, 1] < 0) | (flat[:, 2] > w) | (flat[:, 3] > h)
    if outside.any():
        i = int(torch.nonzero(outside)[0])
        raise ValueError(f"{where}: box {i} {flat[i].tolist()} lies outside the {w}x{h} image: clip it with "
                         "torchvision.ops.clip_boxes_to_image, or drop it (transforms.v2.SanitizeBoundingBoxes)")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{where}: labels must be integer class numbers, got {labels.dtype}")
    bad = (labels < 1) | (labels > num_classes)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise ValueError(f"{where}: label {int(labels[i])} (box {i}) is outside 1..{num_classes}: label 0 is the "
                         "background in torchvision's detection models, so number the classes from 1")
    masks = target.get("masks")
    if masks is not None:
        if masks.is_floating_point() or masks.dim() != 3:
            raise ValueError(f"{where}: masks must be bool or uint8 (K, H, W), one per box, got {masks.dtype} "
                             f"{tuple(masks.shape)}")
        if masks.shape != (len(boxes), h, w):
            raise ValueError(f"{where}: masks have shape {tuple(masks.shape)}, expected ({len(boxes)}, {h}, {w}): "
                             "one mask per box, at the image's size")


def check_images(images: Sequence[torch.Tensor], where: str = "the batch") -> None:
    """Check a list of images for a detection model: float (3, H, W) tensors, all of one size.

    torchvision's detection transform would pad mixed sizes to one batch; cvlab's detectors are
    built for one input size (``fcos_mobilenet_v2(image_size=...)``) and a mixed batch is nearly
    always a pipeline mistake (a resize left out of one branch).

    Raises:
        ValueError: an image that is not a float (3, H, W) tensor (the message says how to convert
            uint8 images), or images of different sizes (the message lists the sizes and the fix).
    """
    sizes = []
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
            got = f"{img.dtype} {tuple(img.shape)}" if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"image {i} of {where} must be a float (3, H, W) tensor in [0, 1], got {got}: convert uint8 "
                             "images with transforms.v2.ToDtype(torch.float32, scale=True)")
        sizes.append(tuple(img.shape[-2:]))
    if len(set(sizes)) > 1:
        raise ValueError(f"{where} mixes image sizes {sorted(set(sizes))} (H, W): make every image one size, e.g. "
                         "transforms.v2.Resize((H, W)) in every split's transforms, which resizes the boxes too")


def filter_detections(prediction: dict, score_threshold: float = 0.5,
                      iou_threshold: float | None = None) -> dict[str, torch.Tensor]:
    """Keep the detections scoring at least ``score_threshold``, then (optionally) apply
    class-wise NMS at ``iou_threshold`` with ``torchvision.ops.batched_nms``.

    Args:
        prediction: ``boxes`` (N, 4) XYXY pixels, ``scores`` (N,) in [0, 1], ``labels`` (N,);
            other keys of length N (e.g. ``masks``) are filtered alike.
        score_threshold: in [0, 1].
        iou_threshold: in [0, 1]; of two same-class boxes overlapping more than this, the
            lower-scoring one is dropped. None: no NMS (detectors already apply their own).

    Returns:
        a dict with the same keys, the kept detections in descending score order.

    Raises:
        ValueError: a threshold outside [0, 1], or keys of different lengths.
    """
    from torchvision.ops import batched_nms

    for name, t in (("score_threshold", score_threshold), ("iou_threshold", iou_threshold)):
        if t is not None and not 0.0 <= t <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {t}")
    n = len(prediction["scores"])
    if any(isinstance(v, torch.Tensor) and len(v) != n for v in prediction.values()):
        raise ValueError(f"every entry of a prediction needs one row per detection ({n} scores): got "
                         f"{ {k: len(v) for k, v in prediction.items()} }")
    keep = torch.nonzero(prediction["scores"] >= score_threshold).flatten()
    keep = keep[prediction["scores"][keep].argsort(descending=True)]
    if iou_threshold is not None and len(keep):
        kept = batched_nms(prediction["boxes"][keep].float(), prediction["scores"][keep].float(),
                           prediction["labels"][keep], iou_threshold)
        keep = keep[kept]
    return {k: (v[keep] if isinstance(v, torch.Tensor) else v) for k, v in prediction.items()}


def match_detections(prediction: dict, target: dict, iou_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Match detections to ground-truth boxes as COCO's evaluation does: in descending score
    order, each detection takes the unmatched true box of its class it overlaps most, if that
    IoU (``torchvision.ops.box_iou``) is at least ``iou_threshold``.

    Args:
        prediction: ``boxes`` (N, 4) XYXY pixels, ``scores`` (N,), ``labels`` (N,).
        target: ``boxes`` (K, 4) XYXY pixels, ``labels`` (K,).
        iou_threshold: in (0, 1].

    Returns:
        ``(true_positive, matched)``: bool (N,) in the prediction's order (False: a false
        positive) and bool (K,) (False: a miss).

    Raises:
        ValueError: iou_threshold outside (0, 1].
    """
    from torchvision.ops import box_iou

    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    boxes = prediction["boxes"].as_subclass(torch.Tensor).float()
    gt = target["boxes"].as_subclass(torch.Tensor).float()
    true_positive = torch.zeros(len(boxes), dtype=torch.bool)
    matched = torch.zeros(len(gt), dtype=torch.bool)
    if len(boxes) == 0 or len(gt) == 0:
        return true_positive, matched
    iou = box_iou(boxes, gt)
    iou[prediction["labels"].view(-1, 1) != target["labels"].view(1, -1)] = -1.0
    for i in prediction["scores"].argsort(descending=True).tolist():
        candidates = iou[i].masked_fill(matched, -1.0)
        j = int(candidates.argmax())
        if candidates[j] >= iou_threshold:
            true_positive[i], matched[j] = True, True
    return true_positive, matched


def confused_classes(predictions: Sequence[dict], targets: Sequence[dict], iou_threshold: float = 0.5,
                     score_threshold: float = 0.5) -> dict[tuple[int, int], int]:
    """Count detections that found an object but named the wrong class.

    A detection (score >= ``score_threshold``) that is not a true positive but overlaps a true
    box of another class with IoU >= ``iou_threshold`` counts as (true label, predicted label).

    Returns:
        {(true label, predicted label): count}, most frequent first.
    """
    from torchvision.ops import box_iou

    counts: dict[tuple[int, int], int] = {}
    for pred, tgt in zip(predictions, targets):
        pred = filter_detections(pred, score_threshold)
        true_positive, _ = match_detections(pred, tgt, iou_threshold)
        if len(pred["boxes"]) == 0 or len(tgt["boxes"]) == 0:
            continue
        iou = box_iou(pred["boxes"].float(), tgt["boxes"].as_subclass(torch.Tensor).float())
        for i in torch.nonzero(~true_positive).flatten().tolist():
            j = int(iou[i].argmax())
            if iou[i, j] >= iou_threshold and int(tgt["labels"][j]) != int(pred["labels"][i]):
                key = (int(tgt["labels"][j]), int(pred["labels"][i]))
                counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _to_device(images: Sequence[torch.Tensor], targets: Sequence[dict], device: torch.device):
    images = [img.to(device) for img in images]
    targets = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in t.items()} for t in targets]
    return images, targets


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    device: torch.device | str | None = None, *, num_classes: int | None = None,
                    scheduler: Any = None, max_grad_norm: float | None = None,
                    progress: bool = False) -> dict[str, float]:
    """One pass over ``loader`` in train mode, as torchvision's ``references/detection/engine.py``.

    Args:
        model: a torchvision detection model (its forward returns a dict of losses in train mode).
        loader: yields ``(images, targets)``: sequences of float32 (C, H, W) images in [0, 1] and
            of target dicts (``cvlab.scenes.collate_detection`` makes them from a Dataset).
        optimizer: steps once per batch.
        device: None picks CUDA, then MPS, then CPU.
        num_classes: if given, every target is checked with ``check_target`` first.
        scheduler: stepped once per batch (e.g. a warm-up or one-cycle schedule), or None.
        max_grad_norm: clip the gradients' global L2 norm to this value, or None.
        progress: show a progress bar.

    Returns:
        the mean of each loss over the batches (e.g. ``classification``, ``bbox_regression``,
        ``bbox_ctrness`` for FCOS) and their sum as ``loss``, floats; the model's mode is restored.

    Raises:
        ValueError: a bad target (see ``check_target``) or image (``check_images``: not float
            (3, H, W), mixed sizes), images and targets of different counts,
            no batches.
        FloatingPointError: the loss became NaN or infinite (lower the learning rate or clip).
    """
    device = get_device(device)
    sums: dict[str, float] = {}
    batches = 0
    with model_mode(model.to(device), True):
        for images, targets in progress_bar(loader, desc="train", enabled=progress):
            if len(images) != len(targets):
                raise ValueError(f"a batch has {len(images)} images but {len(targets)} targets: give one target "
                                 "per image (an image without objects gets empty boxes and labels)")
            check_images(images, where=f"batch {batches + 1}")
            if num_classes is not None:
                for i, (img, tgt) in enumerate(zip(images, targets)):
                    check_target(tgt, tuple(img.shape[-2:]), num_classes, where=f"target {i} of batch {batches + 1}")
            images, targets = _to_device(images, targets, device)
            losses = model(images, targets)
            loss = sum(losses.values())
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"the detection loss became {loss_value} in batch {batches + 1} "
                                         f"({ {k: round(float(v.detach()), 4) for k, v in losses.items()} }): lower the "
                                         "learning rate, warm it up, or clip gradients (max_grad_norm)")
            optimizer.zero_grad()
            loss.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + loss_value
            batches += 1
    if batches == 0:
        raise ValueError("the loader yielded no batches")
    return {k: v / batches for k, v in sums.items()}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str | None = None, *,
             class_metrics: bool = True, progress: bool = False) -> dict[str, Any]:
    """COCO box mAP of ``model`` on ``loader``, with torchmetrics' ``MeanAveragePrecision``.

    Args:
        model: a torchvision detection model (eval mode returns boxes, scores, labels per image).
        loader: yields ``(images, targets)`` as for ``train_one_epoch``; empty targets count (a
            detection there is a false positive).
        device: None picks CUDA, then MPS, then CPU.
        class_metrics: also return the AP of every class.
        progress: show a progress bar.

    Returns:
        a dict of floats in [0, 1] (COCO's scale; -1 where a size class has no objects): ``map``
        (mAP@[.5:.95]), ``map_50``, ``map_75``, ``mar_100`` (recall with 100 detections per
        image), and with ``class_metrics`` ``ap_per_class``: {label: AP@[.5:.95]}. The model's mode
        is restored.

    Raises:
        ValueError: an image that is not float (3, H, W) or mixed sizes in a batch
            (``check_images``), or no batches.
    """
    from torchmetrics.detection import MeanAveragePrecision

    device = get_device(device)
    metric = MeanAveragePrecision(iou_type="bbox", class_metrics=class_metrics)
    batches = 0
    with model_mode(model.to(device), False):
        for images, targets in progress_bar(loader, desc="evaluate", enabled=progress):
            check_images(images, where=f"batch {batches + 1}")
            outputs = model([img.to(device) for img in images])
            metric.update([{k: v.cpu() for k, v in out.items()} for out in outputs],
                          [{"boxes": t["boxes"].as_subclass(torch.Tensor).cpu().float(),
                            "labels": t["labels"].cpu()} for t in targets])
            batches += 1
    if batches == 0:
        raise ValueError("the loader yielded no batches")
    result = metric.compute()
    out: dict[str, Any] = {k: float(result[k]) for k in ("map", "map_50", "map_75", "mar_100")}
    if class_metrics:
        classes = result["classes"].flatten().tolist()
        aps = result["map_per_class"].flatten().tolist()
        out["ap_per_class"] = {int(c): float(a) for c, a in zip(classes, aps)}
    return out
