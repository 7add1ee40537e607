"""cvlab.scenes: exact labels, no overlap, no leakage between splits, a COCO round trip through
torchvision's own reader, and clear errors for bad input."""
import json

import pytest
import torch
from torchvision import tv_tensors
from torchvision.ops import box_iou, masks_to_boxes
from torchvision.transforms import v2

from cvlab.scenes import (ITEM_THRESHOLD, SCENE_CLASSES, collate_detection, fashion_mnist_scenes, make_scene,
                          make_scenes, read_coco, scene_loader, write_coco)


@pytest.fixture(scope="module")
def items():
    """40 small synthetic items: a bright square with a dark rim, classes 0..9."""
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(40, 28, 28, dtype=torch.uint8)
    x[:, 4:24, 6:22] = torch.randint(60, 256, (40, 20, 16), generator=g, dtype=torch.uint8)
    return x, torch.arange(40) % 10


def test_a_scene_has_exact_boxes_masks_and_labels(items):
    scenes = make_scenes(*items, 30, seed=3, size=96, min_items=1, max_items=3)
    counts = set()
    for image, target in scenes:
        assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (1, 96, 96)
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format.value == "XYXY"
        assert tuple(boxes.canvas_size) == (96, 96) and boxes.dtype == torch.float32
        assert labels.dtype == torch.int64 and labels.min() >= 1 and labels.max() <= 10
        assert masks.dtype == torch.bool and masks.shape == (len(labels), 96, 96)
        edges = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0]) if len(masks) else torch.zeros(0, 4)
        assert torch.equal(edges, boxes.as_subclass(torch.Tensor))                   # boxes come from the masks
        for mask in masks:                                                            # masks are the bright pixels
            assert (image[0][mask] > ITEM_THRESHOLD).all()
        if len(boxes) > 1:
            iou = box_iou(boxes, boxes)
            assert (iou - torch.eye(len(boxes))).abs().max() == 0, "items never overlap"
        counts.add(len(labels))
    assert counts == {1, 2, 3}


def test_pixels_outside_every_mask_stay_background(items):
    image, target = make_scene(*items, size=64, min_items=3, max_items=3, scale=(16, 24),
                               generator=torch.Generator().manual_seed(0))
    outside = ~target["masks"].any(0)
    assert (image[0][outside] == 0).all()


def test_same_seed_same_scenes_and_empty_scenes_exist(items):
    a = make_scenes(*items, 12, seed=5, min_items=0, max_items=2)
    b = make_scenes(*items, 12, seed=5, min_items=0, max_items=2)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1]["boxes"], y[1]["boxes"]) for x, y in zip(a, b))
    empty = [t for _, t in a if len(t["labels"]) == 0]
    assert empty and all(t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 96, 96) for t in empty)


def test_an_rgb_background_gives_an_rgb_scene(items):
    photo = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    image, target = make_scene(*items, size=80, min_items=1, background=photo)
    assert image.shape == (3, 80, 80) and target["masks"].shape[-2:] == (80, 80)


def test_fashion_mnist_scenes_use_the_asked_split(fmnist_root):
    train = fashion_mnist_scenes("train", 3, seed=0, min_items=2, max_items=2)
    test = fashion_mnist_scenes("test", 3, seed=0, min_items=2, max_items=2)
    assert not torch.equal(train[0][0], test[0][0]), "test scenes are made of test items, not training items"
    with pytest.raises(ValueError, match="split must be 'train'"):
        fashion_mnist_scenes("val", 1)


def test_coco_round_trip_through_torchvision(items, tmp_path):
    scenes = make_scenes(*items, 6, seed=2, min_items=0, max_items=3)
    path = write_coco(tmp_path, scenes)
    coco = json.loads(path.read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
    assert coco["categories"][0]["name"] == SCENE_CLASSES[1] == "T-shirt/top"
    assert min(a["id"] for a in coco["annotations"]) == 1 and min(i["id"] for i in coco["images"]) == 1
    dataset = read_coco(tmp_path, transforms=v2.Compose([v2.ToImage()]))
    assert len(dataset) == len(scenes)
    for (image, target), (ref_image, ref) in zip(dataset, scenes):
        assert image.shape[0] == 3 and all(torch.equal(channel, ref_image[0]) for channel in image)  # read as RGB
        assert torch.equal(target["labels"], ref["labels"])
        assert torch.allclose(target["boxes"], ref["boxes"]) and target["boxes"].format.value == "XYXY"
        assert torch.equal(target["masks"].bool(), ref["masks"])
    assert any(len(t["labels"]) == 0 for _, t in scenes), "the round trip includes an empty scene"


def test_transforms_move_boxes_and_masks_with_the_image(items, tmp_path):
    write_coco(tmp_path, make_scenes(*items, 2, seed=4, min_items=2, max_items=2))
    flip = v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(p=1.0)])
    image, target = read_coco(tmp_path, transforms=flip)[0]
    edges = masks_to_boxes(target["masks"].bool()) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(edges, target["boxes"].as_subclass(torch.Tensor))


def test_collate_keeps_images_and_targets_apart(items):
    batch = make_scenes(*items, 3, seed=0)
    images, targets = collate_detection(batch)
    assert len(images) == len(targets) == 3 and "boxes" in targets[0]
    with pytest.raises(ValueError, match="empty batch"):
        collate_detection([])


@pytest.mark.parametrize("bad, message", [
    (dict(items=torch.zeros(4, 28, 28)), "uint8"),
    (dict(items=torch.zeros(4, 3, 28, 28, dtype=torch.uint8)), "grayscale"),
    (dict(labels=torch.arange(3)), "one per item"),
    (dict(labels=torch.tensor([0, 1, 2, 10])), r"0\.\.9"),
    (dict(scale=(30, 100)), "largest <= size=96"),
    (dict(min_items=3, max_items=1), "min_items <= max_items"),
    (dict(background=torch.zeros(96, 96, dtype=torch.uint8)), "uint8 \\(1 or 3, H, W\\)"),
])
def test_bad_input_is_named(bad, message):
    args = {"items": torch.zeros(4, 28, 28, dtype=torch.uint8), "labels": torch.arange(4)}
    args.update({k: v for k, v in bad.items() if k in args})
    kwargs = {k: v for k, v in bad.items() if k not in args}
    with pytest.raises((TypeError, ValueError), match=message):
        make_scene(args["items"], args["labels"], **kwargs)


def test_read_coco_without_annotations_says_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_coco"):
        read_coco(tmp_path)


def test_scene_loader_gives_float_rgb_batches_and_a_seeded_order():
    scenes = make_scenes(torch.full((6, 28, 28), 200, dtype=torch.uint8), torch.arange(6), 10, seed=0, size=48,
                         min_items=0, max_items=2, scale=(12, 20))
    state = torch.get_rng_state()
    images, targets = next(iter(scene_loader(scenes, batch_size=4)))
    assert len(images) == 4 and images[0].shape == (3, 48, 48) and images[0].dtype == torch.float32
    assert 0.0 <= images[0].min() and images[0].max() <= 1.0
    assert torch.equal(images[0][0], images[0][2]) and set(targets[0]) == {"boxes", "labels"}
    order = lambda seed: [t["boxes"].sum().item() for _, ts in scene_loader(scenes, 2, shuffle=True, seed=seed) for t in ts]
    assert order(3) == order(3) and sorted(order(3)) == sorted(order(4))
    assert torch.equal(state, torch.get_rng_state()), "the global random state is not touched"
    with pytest.raises(ValueError, match="at least one scene"):
        scene_loader([], 4)


def test_empty_scenes_read_back_with_empty_area_and_iscrowd(tmp_path):
    scenes = make_scenes(torch.full((4, 28, 28), 200, dtype=torch.uint8), torch.arange(4), 4, seed=0, size=48,
                         min_items=0, max_items=0)
    write_coco(tmp_path, scenes)
    _, target = read_coco(tmp_path, target_keys=("image_id", "boxes", "labels", "area", "iscrowd"))[0]
    assert target["boxes"].shape == (0, 4) and target["area"].shape == (0,) and target["iscrowd"].shape == (0,)


def test_transforms_that_need_labels_work_on_empty_scenes(tmp_path):
    scenes = make_scenes(torch.full((4, 28, 28), 200, dtype=torch.uint8), torch.arange(4), 3, seed=0, size=48,
                         min_items=0, max_items=0)
    write_coco(tmp_path, scenes)
    pipeline = v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(1.0), v2.SanitizeBoundingBoxes()])
    image, target = read_coco(tmp_path, transforms=pipeline)[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and image.shape == (3, 48, 48)
