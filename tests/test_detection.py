"""cvlab.detection: targets checked with messages that name the problem; train_one_epoch and
evaluate run a real torchvision detector (a tiny FCOS) on exact scenes, empty ones included."""
import pytest
import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator

from cvlab.detection import check_target, evaluate, train_one_epoch
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


def test_fcos_mobilenet_v2_trains_its_head_and_keeps_the_frozen_blocks_fixed():
    from cvlab.detection import fcos_mobilenet_v2
    model = fcos_mobilenet_v2(10, 96, blocks=7, frozen_blocks=4)
    assert model.head.classification_head.num_classes == 11              # 10 classes + the background
    frozen = model.backbone.body[:4]
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in model.backbone.body[4:].parameters())
    model.train()
    assert not any(m.training for m in frozen.modules() if m is not frozen)  # frozen BatchNorm keeps its statistics
    assert model.backbone.body[4].training
    losses = model([torch.rand(3, 96, 96)], [{"boxes": torch.tensor([[10.0, 12.0, 40.0, 44.0]]),
                                              "labels": torch.tensor([3])}])
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    model.eval()
    out = model([torch.rand(3, 96, 96)])[0]
    assert set(out) == {"boxes", "scores", "labels"}
    with pytest.raises(ValueError, match="frozen_blocks <= blocks"):
        fcos_mobilenet_v2(10, 96, blocks=4, frozen_blocks=5)
