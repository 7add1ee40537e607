"""cvlab.detection: targets checked with messages that name the problem; train_one_epoch and
evaluate run a real torchvision detector (a tiny FCOS) on exact scenes, empty ones included."""
import pytest
import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator

from cvlab.detection import (check_images, check_target, confused_classes, evaluate, filter_detections,
                             match_detections, train_one_epoch)
from cvlab.scenes import collate_detection, make_scenes


def _tiny_fcos():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
    backbone.out_channels = 32
    return FCOS(backbone, num_classes=11, anchor_generator=AnchorGenerator(((16,),), ((1.0,),)), min_size=64,
                max_size=64, image_mean=[0.5] * 3, image_std=[0.25] * 3)


@pytest.fixture(scope="module")
def batches():
    g = torch.Generator().manual_seed(1)
    items = torch.zeros(20, 28, 28, dtype=torch.uint8)
    items[:, 4:24, 6:22] = torch.randint(60, 256, (20, 20, 16), generator=g, dtype=torch.uint8)
    scenes = make_scenes(items, torch.arange(20) % 10, 8, seed=0, size=64, min_items=0, max_items=2, scale=(16, 28))
    assert any(len(t["labels"]) == 0 for _, t in scenes), "an empty scene is among them"
    as_float = [(img.expand(3, -1, -1).float() / 255, {"boxes": t["boxes"], "labels": t["labels"]}) for img, t in scenes]
    return [collate_detection(as_float[i:i + 4]) for i in (0, 4)]


def test_train_one_epoch_returns_the_mean_of_each_loss_and_restores_the_mode(batches):
    model = _tiny_fcos().eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = train_one_epoch(model, batches, opt, "cpu", num_classes=10, max_grad_norm=5.0)
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness", "loss"}
    assert abs(losses["loss"] - (losses["classification"] + losses["bbox_regression"] + losses["bbox_ctrness"])) < 1e-4
    assert not model.training


def test_evaluate_gives_coco_map_in_0_1_and_per_class_ap(batches):
    model = _tiny_fcos().train()
    result = evaluate(model, batches, "cpu")
    assert {"map", "map_50", "map_75", "mar_100", "ap_per_class"} <= set(result)
    assert 0.0 <= result["map"] <= result["map_50"] <= 1.0
    assert all(1 <= c <= 10 for c in result["ap_per_class"])
    assert model.training


def test_a_perfect_detector_scores_map_1(batches):
    class Oracle(nn.Module):
        """Returns each batch's true boxes with score 1 (eval mode's output format)."""
        def __init__(self, answers):
            super().__init__()
            self.answers = iter(answers)

        def forward(self, images):
            return [{"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"],
                     "scores": torch.ones(len(t["labels"]))} for t in next(self.answers)]

    result = evaluate(Oracle([targets for _, targets in batches]), batches, "cpu")
    assert result["map"] == pytest.approx(1.0) and result["map_50"] == pytest.approx(1.0)


GOOD = {"boxes": torch.tensor([[2.0, 3.0, 20.0, 30.0]]), "labels": torch.tensor([4])}


@pytest.mark.parametrize("change, message", [
    ({"boxes": torch.tensor([[20.0, 3.0, 2.0, 30.0]])}, r"box 0 \[20.0, 3.0, 2.0, 30.0\] has x2 <= x1.*box_convert"),
    ({"boxes": torch.tensor([[2.0, 3.0, 70.0, 30.0]])}, r"outside the 64x48 image: clip it"),
    ({"labels": torch.tensor([0])}, r"label 0 \(box 0\) is outside 1..10: label 0 is the background"),
    ({"labels": torch.tensor([11])}, r"label 11 \(box 0\) is outside 1..10"),
    ({"labels": torch.tensor([1, 2])}, r"1 boxes but labels of shape \(2,\)"),
    ({"boxes": torch.tensor([2.0, 3.0, 20.0, 30.0])}, r"boxes must have shape \(K, 4\)"),
    ({"masks": torch.zeros(1, 48, 64)}, r"masks must be bool or uint8 \(K, H, W\)"),
    ({"masks": torch.zeros(48, 64, dtype=torch.bool)}, r"masks must be bool or uint8"),
    ({"masks": torch.zeros(2, 48, 64, dtype=torch.bool)}, r"expected \(1, 48, 64\)"),
    ({"labels": torch.tensor([1.0])}, r"labels must be integer"),
])
def test_bad_targets_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        check_target({**GOOD, **change}, (48, 64), num_classes=10, where="target 0")


def test_good_and_empty_targets_pass_and_a_non_dict_is_a_type_error():
    check_target(GOOD, (48, 64), 10)
    check_target({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}, (48, 64), 10)
    with pytest.raises(TypeError, match="must be a dict with tensors"):
        check_target([[1, 2, 3, 4]], (48, 64), 10)


def test_training_names_the_bad_target_and_the_batch(batches):
    images, targets = batches[0]
    bad = list(targets)
    bad[1] = {"boxes": torch.tensor([[5.0, 5.0, 1.0, 9.0]]), "labels": torch.tensor([3])}
    model = _tiny_fcos()
    with pytest.raises(ValueError, match=r"target 1 of batch 1: box 0"):
        train_one_epoch(model, [(images, tuple(bad))], torch.optim.SGD(model.parameters(), lr=0.1), "cpu",
                        num_classes=10)
    with pytest.raises(ValueError, match="4 images but 3 targets"):
        train_one_epoch(model, [(images, targets[:3])], torch.optim.SGD(model.parameters(), lr=0.1), "cpu")


def test_images_of_mixed_sizes_or_uint8_are_named_with_the_fix(batches):
    with pytest.raises(ValueError, match=r"mixes image sizes \[\(64, 64\), \(80, 80\)\].*Resize"):
        check_images([torch.rand(3, 64, 64), torch.rand(3, 80, 80)])
    with pytest.raises(ValueError, match=r"image 1 of the batch must be a float \(3, H, W\).*ToDtype"):
        check_images([torch.rand(3, 64, 64), torch.zeros(3, 64, 64, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="must be a float"):
        check_images([torch.rand(64, 64)])
    images, targets = batches[0]
    mixed = (images[0], torch.rand(3, 80, 80), *images[2:])
    model = _tiny_fcos()
    with pytest.raises(ValueError, match="batch 1 mixes image sizes"):
        train_one_epoch(model, [(mixed, targets)], torch.optim.SGD(model.parameters(), lr=0.1), "cpu")
    with pytest.raises(ValueError, match="batch 1 mixes image sizes"):
        evaluate(model, [(mixed, targets)], "cpu")


def _prediction(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


def test_filter_detections_thresholds_scores_then_suppresses_per_class():
    pred = _prediction([[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [50, 50, 60, 60]],
                       [0.9, 0.8, 0.7, 0.3], [1, 1, 2, 1])
    assert filter_detections(pred, 0.5)["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7])
    kept = filter_detections(pred, 0.0, iou_threshold=0.5)
    assert kept["labels"].tolist() == [1, 2, 1]                  # box 1 (IoU 0.82 with box 0, same class) suppressed
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.7, 0.3])
    assert len(filter_detections(pred, 0.0, iou_threshold=0.9)["boxes"]) == 4
    assert len(filter_detections(pred, 0.95)["boxes"]) == 0
    with pytest.raises(ValueError, match=r"score_threshold must be in \[0, 1\]"):
        filter_detections(pred, 1.5)
    with pytest.raises(ValueError, match="one row per detection"):
        filter_detections({**pred, "labels": torch.tensor([1])}, 0.5)


def test_match_detections_follows_cocos_rule():
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]),
              "labels": torch.tensor([1, 1, 2])}
    pred = _prediction([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [40, 40, 50, 50], [70, 70, 80, 80]],
                       [0.6, 0.9, 0.8, 0.7, 0.5], [1, 1, 1, 3, 1])
    true_positive, matched = match_detections(pred, target)
    # the 0.9 detection takes box 0 first, so the 0.6 duplicate is a false positive; class 3 on a class-2 box
    # is a false positive and leaves that box missed; the last detection overlaps nothing
    assert true_positive.tolist() == [False, True, True, False, False]
    assert matched.tolist() == [True, True, False]
    shifted = _prediction([[0, 5, 10, 15]], [0.9], [1])                   # IoU 1/3
    assert match_detections(shifted, target)[0].tolist() == [False]
    assert match_detections(shifted, target, iou_threshold=0.3)[0].tolist() == [True]
    empty = _prediction(torch.zeros(0, 4).tolist(), [], [])
    assert match_detections(empty, target)[1].tolist() == [False, False, False]
    with pytest.raises(ValueError, match=r"iou_threshold must be in \(0, 1\]"):
        match_detections(pred, target, iou_threshold=0)


def test_confused_classes_counts_right_place_wrong_class():
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([7, 1])}
    pred = _prediction([[0, 0, 10, 10], [20, 20, 30, 30], [60, 60, 70, 70]], [0.9, 0.8, 0.9], [1, 1, 7])
    assert confused_classes([pred, pred], [target, target]) == {(7, 1): 2}
    assert confused_classes([pred], [target], score_threshold=0.95) == {}
