"""Detection and segmentation scenes with exact labels, made from real Fashion-MNIST items.

Each scene is a square canvas (black, or a crop of a real photo) with 0 to ``max_items`` items
pasted at random sizes and positions without overlapping. An item's pixels are those of its
resized image brighter than ``ITEM_THRESHOLD``; its mask is exactly those pixels and its box the
tightest box around them, so the ground truth is exact, not drawn by hand. Boxes are XYXY in pixel
edges, as COCO and torchvision's transforms treat them: a box covering pixel columns 3..7 is
x1 = 3, x2 = 8 (``torchvision.ops.masks_to_boxes`` gives the last pixel's index, 7; we add 1), so a
horizontal flip or a resize moves boxes and masks alike.
Labels follow torchvision's detection models: 1..10 for Fashion-MNIST's classes 0..9, 0 is the
background (``SCENE_CLASSES[0]``). Scenes made from the training split are for training and
scenes from the test split for testing, so no item is in both.

``write_coco`` stores scenes as PNG files and one COCO annotation file (boxes as [x, y, w, h],
masks as uncompressed RLE), which ``read_coco`` reads back with torchvision's own
``CocoDetection`` and ``wrap_dataset_for_transforms_v2``. Lessons 06 (detection) and 07
(segmentation) use them.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms.v2 import functional as F

from .datasets import FASHION_MNIST_CLASSES, fashion_mnist_tensors
from .utils import DEFAULT_SEED

__all__ = ["ITEM_THRESHOLD", "SCENE_CLASSES", "collate_detection", "fashion_mnist_scenes", "make_scene",
           "make_scenes", "read_coco", "scene_loader", "write_coco"]

#: uint8 brightness above which a pixel of a resized item belongs to the item (its mask)
ITEM_THRESHOLD = 10

#: the class names by detection label: 0 is the background, 1..10 Fashion-MNIST's classes
SCENE_CLASSES = ("__background__", *FASHION_MNIST_CLASSES)


def _check_items(items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if not isinstance(items, torch.Tensor) or items.dtype != torch.uint8:
        raise TypeError(f"items must be a uint8 tensor (N, 28, 28) or (N, 1, H, W), got "
                        f"{getattr(items, 'dtype', type(items).__name__)}")
    if items.dim() == 3:
        items = items[:, None]
    if items.dim() != 4 or items.shape[1] != 1:
        raise ValueError(f"items must be grayscale, (N, H, W) or (N, 1, H, W); got shape {tuple(items.shape)}")
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(items),):
        raise ValueError(f"labels must be a tensor of {len(items)} class indices (one per item), got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    if len(items) == 0:
        raise ValueError("items is empty: give at least one item to place")
    return items


def _background(background: torch.Tensor | None, size: int, generator: torch.Generator) -> torch.Tensor:
    """A (C, size, size) uint8 canvas: black, or a random square crop of ``background`` resized to ``size``."""
    if background is None:
        return torch.zeros(1, size, size, dtype=torch.uint8)
    if background.dtype != torch.uint8 or background.dim() != 3 or background.shape[0] not in (1, 3):
        raise ValueError(f"background must be a uint8 (1 or 3, H, W) image, got {background.dtype} "
                         f"{tuple(background.shape)}")
    h, w = background.shape[-2:]
    side = min(h, w)
    top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
    crop = background[:, top:top + side, left:left + side]
    return F.resize(crop, [size, size], antialias=True).clone()


def _edge_boxes(masks: torch.Tensor) -> torch.Tensor:
    """float32 (K, 4) XYXY boxes in pixel edges around bool (K, H, W) masks (K may be 0)."""
    if len(masks) == 0:
        return torch.zeros(0, 4)
    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])


def make_scene(items: torch.Tensor, labels: torch.Tensor, *, size: int = 96, min_items: int = 0,
               max_items: int = 3, scale: tuple[int, int] = (24, 48), background: torch.Tensor | None = None,
               generator: torch.Generator | None = None, max_tries: int = 50) -> tuple[tv_tensors.Image, dict]:
    """One scene: items pasted at random sizes and positions, without overlap, and their exact labels.

    Args:
        items: uint8 (N, 28, 28) or (N, 1, H, W) grayscale item images to draw from (e.g.
            Fashion-MNIST's training split for training scenes).
        labels: int64 (N,) their classes, 0..9; the scene's labels are these + 1.
        size: the canvas's height = width, pixels.
        min_items, max_items: how many items to place, drawn uniformly from this range; with
            ``min_items=0`` some scenes are empty. Items that find no free place in ``max_tries``
            random positions are left out, so a scene may hold fewer.
        scale: the smallest and largest item side, pixels (items are square).
        background: None for black, or a uint8 (1 or 3, H, W) photo, of which a random square
            crop is resized to ``size``; with 3 channels the scene is RGB.
        generator: the random generator (default: seeded with ``DEFAULT_SEED``).
        max_tries: positions tried per item.

    Returns:
        ``(image, target)``: image a ``tv_tensors.Image`` uint8 (C, size, size), C = 1 or 3;
        target a dict with ``boxes`` (``tv_tensors.BoundingBoxes``, float32 (K, 4), XYXY in
        pixel edges: ``masks_to_boxes(masks) + [0, 0, 1, 1]``), ``labels``
        int64 (K,) in 1..10, and ``masks`` (``tv_tensors.Mask``, bool (K, size, size)).

    Raises:
        TypeError, ValueError: items not uint8 grayscale, labels of another length or outside 0..9,
            a scale that does not fit the canvas, min_items > max_items, a bad background.
    """
    items = _check_items(items, labels)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(FASHION_MNIST_CLASSES)):
        raise ValueError(f"labels must be class indices 0..{len(FASHION_MNIST_CLASSES) - 1} (they become 1..10 "
                         f"in the scene), got {int(labels.min())}..{int(labels.max())}")
    if not 1 <= scale[0] <= scale[1] <= size:
        raise ValueError(f"scale must be (smallest, largest) item side with 1 <= smallest <= largest <= size={size}, "
                         f"got {scale}")
    if not 0 <= min_items <= max_items:
        raise ValueError(f"need 0 <= min_items <= max_items, got {min_items} and {max_items}")
    g = generator if generator is not None else torch.Generator().manual_seed(DEFAULT_SEED)
    canvas = _background(background, size, g)
    count = int(torch.randint(min_items, max_items + 1, (1,), generator=g))
    taken = torch.zeros(size, size, dtype=torch.bool)
    masks, classes = [], []
    for _ in range(count):
        k = int(torch.randint(0, len(items), (1,), generator=g))
        side = int(torch.randint(scale[0], scale[1] + 1, (1,), generator=g))
        item = F.resize(items[k], [side, side], antialias=True)[0]
        pixels = item > ITEM_THRESHOLD
        if not pixels.any():
            continue
        bx1, by1, bx2, by2 = (int(v) for v in masks_to_boxes(pixels[None])[0])  # the item's box inside its square
        for _ in range(max_tries):
            top = int(torch.randint(0, size - side + 1, (1,), generator=g))
            left = int(torch.randint(0, size - side + 1, (1,), generator=g))
            x1, y1, x2, y2 = left + bx1, top + by1, left + bx2, top + by2
            # free means: the item's box, grown by one pixel, touches no earlier item's box
            if not taken[max(y1 - 1, 0):y2 + 2, max(x1 - 1, 0):x2 + 2].any():
                taken[y1:y2 + 1, x1:x2 + 1] = True
                region = canvas[:, top:top + side, left:left + side]
                canvas[:, top:top + side, left:left + side] = torch.where(pixels, item, region)
                mask = torch.zeros(size, size, dtype=torch.bool)
                mask[top:top + side, left:left + side] = pixels
                masks.append(mask)
                classes.append(int(labels[k]) + 1)
                break
    stacked = torch.stack(masks) if masks else torch.zeros(0, size, size, dtype=torch.bool)
    target = {
        "boxes": tv_tensors.BoundingBoxes(_edge_boxes(stacked), format="XYXY", canvas_size=(size, size)),
        "labels": torch.tensor(classes, dtype=torch.int64),
        "masks": tv_tensors.Mask(stacked),
    }
    return tv_tensors.Image(canvas), target


def make_scenes(items: torch.Tensor, labels: torch.Tensor, n: int, *, seed: int = DEFAULT_SEED,
                **scene_kwargs: Any) -> list[tuple[tv_tensors.Image, dict]]:
    """``n`` scenes from one seeded generator (the same seed gives the same scenes).

    Args:
        items, labels: as ``make_scene``.
        n: how many scenes (>= 1).
        seed: the generator's seed.
        **scene_kwargs: ``make_scene``'s size, min_items, max_items, scale, background, max_tries.

    Returns:
        a list of ``(image, target)`` pairs as ``make_scene`` returns them.

    Raises:
        ValueError: ``n`` < 1, or as ``make_scene``.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of scenes, got {n!r}")
    g = torch.Generator().manual_seed(seed)
    return [make_scene(items, labels, generator=g, **scene_kwargs) for _ in range(n)]


def fashion_mnist_scenes(split: str, n: int, *, seed: int = DEFAULT_SEED, root: str | os.PathLike | None = None,
                         **scene_kwargs: Any) -> list[tuple[tv_tensors.Image, dict]]:
    """``n`` scenes made from Fashion-MNIST's ``split`` ("train" or "test") items.

    Raises:
        ValueError: another split; as ``make_scenes``. ``FileNotFoundError`` as
            ``cvlab.datasets.fashion_mnist_tensors`` when the data is not set up.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' (training scenes) or 'test' (test scenes), got {split!r}")
    images, labels = fashion_mnist_tensors(split, root=root)
    return make_scenes(images, labels, n, seed=seed, **scene_kwargs)


def _rle(mask: torch.Tensor) -> dict:
    """COCO's uncompressed RLE of a bool (H, W) mask: run lengths in column-major order, zeros first."""
    flat = mask.t().flatten().to(torch.int8)
    change = torch.nonzero(flat[1:] != flat[:-1]).flatten() + 1
    edges = torch.cat([torch.tensor([0]), change, torch.tensor([flat.numel()])])
    counts = (edges[1:] - edges[:-1]).tolist()
    if flat.numel() and flat[0] == 1:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def write_coco(root: str | os.PathLike, scenes: Sequence[tuple[torch.Tensor, dict]],
               class_names: Sequence[str] = SCENE_CLASSES) -> Path:
    """Write scenes as ``root/images/000001.png`` ... and ``root/annotations.json`` (COCO format).

    Image and annotation ids start at 1 (pycocotools reads 0 as "no match"); category ids are
    the scene labels (1..10), named from ``class_names`` (index 0 is the background, not written).
    Boxes are written as [x1, y1, x2 - x1, y2 - y1] (COCO's [x, y, width, height] in pixel edges),
    so ``read_coco`` gives back the same XYXY boxes; ``area`` is the mask's pixel count; masks are
    uncompressed RLE. Images are written as they are (grayscale or RGB PNG).

    Returns:
        the annotation file's path.

    Raises:
        ValueError: no scenes, or a target without boxes/labels/masks of matching lengths.
    """
    from PIL import Image

    if not scenes:
        raise ValueError("no scenes to write")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    coco: dict = {"images": [], "annotations": [],
                  "categories": [{"id": i, "name": name} for i, name in enumerate(class_names) if i > 0]}
    for image_id, (image, target) in enumerate(scenes, start=1):
        boxes, labels, masks = target.get("boxes"), target.get("labels"), target.get("masks")
        if boxes is None or labels is None or masks is None or not len(boxes) == len(labels) == len(masks):
            raise ValueError(f"scene {image_id}: the target needs boxes, labels and masks of the same length")
        name = f"{image_id:06d}.png"
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(root / "images" / name)
        h, w = image.shape[-2:]
        coco["images"].append({"id": image_id, "file_name": name, "height": int(h), "width": int(w)})
        for box, label, mask in zip(boxes.tolist(), labels.tolist(), masks):
            x1, y1, x2, y2 = box
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                        "area": int(mask.sum()), "iscrowd": 0, "segmentation": _rle(mask)})
    path = root / "annotations.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(coco))
    os.replace(tmp, path)
    return path


def read_coco(root: str | os.PathLike, transforms: Any = None,
              target_keys: Sequence[str] = ("image_id", "boxes", "labels", "masks")):
    """The scenes ``write_coco`` wrote, read with torchvision's ``CocoDetection`` and
    ``wrap_dataset_for_transforms_v2`` (so ``transforms`` may be a ``transforms.v2`` pipeline that
    moves boxes and masks with the image).

    Returns:
        a Dataset of ``(image, target)``: an RGB PIL image (``CocoDetection`` converts every image
        to RGB, so a grayscale scene comes back with three equal channels), or what ``transforms``
        makes of it, and a
        dict with ``target_keys``: ``boxes`` (``BoundingBoxes``, XYXY), ``labels`` int64, ``masks``
        (``Mask``, uint8), ``image_id``. An empty scene has (0, 4) boxes, no labels and (0, H, W)
        masks (torchvision's wrapper alone would give it only ``image_id``).

    Raises:
        FileNotFoundError: ``root`` has no ``annotations.json`` (write it with ``write_coco``).
    """
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

    root = Path(root)
    if not (root / "annotations.json").is_file():
        raise FileNotFoundError(f"{root / 'annotations.json'} does not exist: write the scenes first with "
                                "cvlab.scenes.write_coco(root, scenes)")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "loading annotations into memory..."
        dataset = CocoDetection(str(root / "images"), str(root / "annotations.json"))
    return _WithEmptyTargets(wrap_dataset_for_transforms_v2(dataset, target_keys=tuple(target_keys)), target_keys,
                             transforms)


class _WithEmptyTargets(torch.utils.data.Dataset):
    """torchvision's wrapper gives a scene without annotations only ``image_id``; this adds empty
    ``boxes`` (0, 4), ``labels`` (0,) and ``masks`` (0, H, W), so empty scenes train like others,
    then applies the transforms (which may need the labels, e.g. ``SanitizeBoundingBoxes``)."""

    def __init__(self, dataset, target_keys: Sequence[str], transforms: Any = None):
        self.dataset, self.target_keys, self.transforms = dataset, tuple(target_keys), transforms

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        if "boxes" in self.target_keys and "boxes" not in target:
            h, w = F.get_size(image)
            target["boxes"] = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(h, w))
            if "labels" in self.target_keys:
                target["labels"] = torch.zeros(0, dtype=torch.int64)
            if "masks" in self.target_keys:
                target["masks"] = tv_tensors.Mask(torch.zeros(0, h, w, dtype=torch.uint8))
            for key, dtype in (("area", torch.float32), ("iscrowd", torch.int64)):
                if key in self.target_keys:
                    target[key] = torch.zeros(0, dtype=dtype)
        return self.transforms(image, target) if self.transforms is not None else (image, target)


def collate_detection(batch: Sequence[tuple[Any, dict]]) -> tuple[tuple, tuple]:
    """A ``DataLoader`` ``collate_fn`` for detection: ``(images, targets)`` as two tuples, since
    images may differ in size and targets in box count (torchvision's ``references/detection``
    ``utils.collate_fn`` does the same)."""
    if not batch:
        raise ValueError("an empty batch")
    return tuple(zip(*batch))  # type: ignore[return-value]


class _FloatRGBScenes(torch.utils.data.Dataset):
    """In-memory scenes as detection models take them: float32 RGB (3, H, W) in [0, 1], boxes and labels."""

    def __init__(self, scenes: Sequence[tuple[torch.Tensor, dict]]):
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int):
        image, target = self.scenes[index]
        image = image.as_subclass(torch.Tensor)
        return (image.expand(3, -1, -1) if image.shape[0] == 1 else image).float().div(255), \
            {"boxes": target["boxes"], "labels": target["labels"]}


def scene_loader(scenes: Sequence[tuple[torch.Tensor, dict]], batch_size: int = 16, *, shuffle: bool = False,
                 seed: int = DEFAULT_SEED) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over in-memory scenes (``make_scenes``) for a detection model.

    Args:
        scenes: ``(image, target)`` pairs, images uint8 (1 or 3, H, W).
        batch_size: scenes per batch.
        shuffle: a new order every epoch, drawn from a generator seeded with ``seed``; the
            global random state is never touched (the loader's per-epoch seed comes from that
            generator too, shuffled or not).

    Returns:
        a loader yielding ``(images, targets)`` tuples (``collate_detection``): images float32
        RGB (3, H, W) in [0, 1] (gray scenes repeated to three channels), targets dicts with
        ``boxes`` (XYXY pixels) and ``labels`` (1..10).

    Raises:
        ValueError: no scenes, or batch_size < 1.
    """
    if len(scenes) == 0 or batch_size < 1:
        raise ValueError(f"need at least one scene and batch_size >= 1, got {len(scenes)} scenes, batch {batch_size}")
    generator = torch.Generator().manual_seed(seed)  # also unshuffled: a DataLoader draws a seed per epoch
    return torch.utils.data.DataLoader(_FloatRGBScenes(scenes), batch_size=batch_size, shuffle=shuffle,
                                       generator=generator, collate_fn=collate_detection)
