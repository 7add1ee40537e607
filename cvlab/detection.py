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

from .pretrained import pretrained
from .utils import get_device, progress_bar

__all__ = ["check_target", "evaluate", "fcos_mobilenet_v2", "train_one_epoch"]


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
        ValueError: a bad target (see ``check_target``), images and targets of different counts,
            no batches.
        FloatingPointError: the loss became NaN or infinite (lower the learning rate or clip).
    """
    device = get_device(device)
    was_training = model.training
    model.to(device).train()
    sums: dict[str, float] = {}
    batches = 0
    try:
        for images, targets in progress_bar(loader, desc="train", enabled=progress):
            if len(images) != len(targets):
                raise ValueError(f"a batch has {len(images)} images but {len(targets)} targets: give one target "
                                 "per image (an image without objects gets empty boxes and labels)")
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
    finally:
        model.train(was_training)
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
        ValueError: no batches.
    """
    from torchmetrics.detection import MeanAveragePrecision

    device = get_device(device)
    was_training = model.training
    model.to(device).eval()
    metric = MeanAveragePrecision(iou_type="bbox", class_metrics=class_metrics)
    batches = 0
    try:
        for images, targets in progress_bar(loader, desc="evaluate", enabled=progress):
            outputs = model([img.to(device) for img in images])
            metric.update([{k: v.cpu() for k, v in out.items()} for out in outputs],
                          [{"boxes": t["boxes"].as_subclass(torch.Tensor).cpu().float(),
                            "labels": t["labels"].cpu()} for t in targets])
            batches += 1
    finally:
        model.train(was_training)
    if batches == 0:
        raise ValueError("the loader yielded no batches")
    result = metric.compute()
    out: dict[str, Any] = {k: float(result[k]) for k in ("map", "map_50", "map_75", "mar_100")}
    if class_metrics:
        classes = result["classes"].flatten().tolist()
        aps = result["map_per_class"].flatten().tolist()
        out["ap_per_class"] = {int(c): float(a) for c, a in zip(classes, aps)}
    return out


class _FrozenPrefixBackbone(nn.Module):
    """``features`` with its first ``frozen`` blocks fixed (no gradients, BatchNorm kept in eval mode
    even when the detector trains) and a 1x1 convolution to ``out_channels``."""

    def __init__(self, features: nn.Sequential, frozen: int, in_channels: int, out_channels: int):
        super().__init__()
        self.body, self.frozen = features, frozen
        for p in self.body[:frozen].parameters():
            p.requires_grad_(False)
        self.proj = nn.Conv2d(in_channels, out_channels, 1)
        self.out_channels = out_channels

    def train(self, mode: bool = True) -> "_FrozenPrefixBackbone":
        super().train(mode)
        self.body[:self.frozen].eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(x))


def fcos_mobilenet_v2(num_classes: int, image_size: int, *, blocks: int = 7, frozen_blocks: int = 4,
                      head_channels: int = 64, head_convs: int = 2, pretrained_backbone: bool = True):
    """torchvision's FCOS (Tian et al., 2019, arXiv:1904.01355) on the first ``blocks`` blocks of
    MobileNetV2 with ImageNet weights: one feature level, a small head, sized for a 2-core CPU.

    Args:
        num_classes: object classes; the model's labels are 1..num_classes (0 is the background,
            so FCOS is built with num_classes + 1 outputs).
        image_size: the side of the (square) input images, pixels; the model does not resize them.
        blocks: MobileNetV2 ``features`` blocks kept: 7 gives stride 8 and 32 channels (4: stride 4).
        frozen_blocks: the first blocks kept fixed (ImageNet's edges and textures).
        head_channels: channels of the 1x1 projection and of the head's convolutions.
        head_convs: 3x3 convolutions in each head branch (torchvision's default is 4).
        pretrained_backbone: load the IMAGENET1K_V1 weights (the file the set-up places offline,
            through ``cvlab.pretrained.pretrained``).

    Returns:
        a ``torchvision.models.detection.FCOS`` taking lists of float32 (3, image_size, image_size)
        images in [0, 1] (ImageNet normalisation inside).

    Raises:
        ValueError: blocks not in 2..18, frozen_blocks not in 0..blocks, a size or channel count < 1.
    """
    from torchvision.models import mobilenet_v2
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    if not 2 <= blocks <= 18 or not 0 <= frozen_blocks <= blocks:
        raise ValueError(f"need 2 <= blocks <= 18 and 0 <= frozen_blocks <= blocks, got {blocks} and {frozen_blocks}")
    if min(num_classes, image_size, head_channels, head_convs) < 1:
        raise ValueError("num_classes, image_size, head_channels and head_convs must be positive")
    net = pretrained("mobilenet_v2", "IMAGENET1K_V1", verbose=False)[0] if pretrained_backbone else mobilenet_v2()
    features = net.features[:blocks]
    with torch.no_grad():
        probe = features.eval()(torch.zeros(1, 3, image_size, image_size))
    stride = image_size // probe.shape[-1]
    backbone = _FrozenPrefixBackbone(features, frozen_blocks, probe.shape[1], head_channels)
    head = FCOSHead(head_channels, num_anchors=1, num_classes=num_classes + 1, num_convs=head_convs)
    return FCOS(backbone, num_classes + 1, min_size=image_size, max_size=image_size,
                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                anchor_generator=AnchorGenerator(((stride,),), ((1.0,),)), head=head)
