"""cvlab.segmentation: mask checks that name the fix, scene masks, a U-Net and an LRASPP head that
learn, Dice against torchmetrics, and mIoU / pixel accuracy from torchmetrics."""
import pytest
import torch
from torch import nn

from cvlab.scenes import make_scenes
from cvlab.segmentation import (IGNORE_INDEX, UNet, check_mask, dice_loss, evaluate, lraspp_mobilenet_v2,
                                semantic_mask, train_one_epoch)


@pytest.mark.parametrize("mask, message", [
    (torch.zeros(8, 8), "convert with mask.long()"),
    (torch.zeros(3, 8, 8, dtype=torch.int64), "a semantic mask is \\(H, W\\)"),
    (torch.zeros(1, 8, 8, dtype=torch.int64), "mask\\[0\\]"),
    (torch.zeros(4, 8, dtype=torch.int64), "is \\(4, 8\\) but its image is \\(8, 8\\).*nearest"),
    (torch.full((8, 8), 11), "holds \\[11\\], outside 0..10"),
    (torch.full((8, 8), -1), "holds \\[-1\\]"),
])
def test_bad_masks_are_named_with_the_fix(mask, message):
    with pytest.raises(ValueError, match=message):
        check_mask(mask, (8, 8), 11)


def test_good_masks_and_the_ignore_index_pass():
    mask = torch.zeros(8, 8, dtype=torch.int64)
    mask[0, 0], mask[1, 1] = 10, IGNORE_INDEX
    check_mask(mask, (8, 8), 11)
    with pytest.raises(TypeError):
        check_mask([[0]], (1, 1), 2)


def test_semantic_mask_paints_each_object_with_its_label():
    scenes = make_scenes(torch.full((4, 28, 28), 200, dtype=torch.uint8), torch.tensor([0, 1, 2, 3]), 3, seed=0,
                         size=64, min_items=2, max_items=3, scale=(16, 24))
    for image, target in scenes:
        mask = semantic_mask(target, image.shape[-2:])
        assert mask.dtype == torch.int64 and mask.shape == (64, 64)
        for m, label in zip(target["masks"], target["labels"]):
            assert (mask[m] == label).all()
        assert (mask[~target["masks"].any(0)] == 0).all()


def test_unet_keeps_the_size_and_refuses_odd_sizes():
    net = UNet(3, 11, base=8, depth=3)
    assert net(torch.rand(2, 3, 32, 48)).shape == (2, 11, 32, 48)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.rand(1, 3, 30, 32))


def test_lraspp_on_mobilenet_v2_outputs_full_size_logits_and_keeps_frozen_blocks_fixed():
    model = lraspp_mobilenet_v2(11, frozen_blocks=4, pretrained_backbone=False)
    out = model(torch.rand(2, 3, 96, 96))["out"]
    assert out.shape == (2, 11, 96, 96)
    low = model.backbone.low
    assert not any(p.requires_grad for p in low[:4].parameters()) and all(p.requires_grad for p in low[4:].parameters())
    model.train()
    assert not any(m.training for m in low[0].modules()) and low[5].training
    with pytest.raises(ValueError, match="0 <= frozen_blocks <= 14"):
        lraspp_mobilenet_v2(11, frozen_blocks=15, pretrained_backbone=False)


def test_dice_loss_matches_torchmetrics_dice_score():
    from torchmetrics.segmentation import DiceScore
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 16, 16), generator=g)
    perfect = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float() * 50  # softmax ~ one-hot
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    hard = torch.randint(0, 4, (2, 16, 16), generator=g)
    logits = torch.nn.functional.one_hot(hard, 4).permute(0, 3, 1, 2).float() * 50
    ours = 1 - dice_loss(logits, target, smooth=0.0).item()
    theirs = DiceScore(num_classes=4, average="macro", input_format="index", include_background=True)(hard, target)
    assert ours == pytest.approx(float(theirs), abs=1e-3)
    masked = target.clone()
    masked[:, :8] = IGNORE_INDEX
    assert dice_loss(perfect, masked).item() == pytest.approx(0.0, abs=1e-4)


def test_training_raises_miou_and_evaluate_restores_the_mode():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(32, 3, 16, 16, generator=g)
    masks = (images[:, 0] > 0.5).long()                     # a class per pixel, learnable from the pixel itself
    loader = [(images[i:i + 8], masks[i:i + 8]) for i in range(0, 32, 8)]
    net = nn.Conv2d(3, 2, 1)
    before = evaluate(net, loader, 2, "cpu")["miou"]
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    for _ in range(20):
        loss = train_one_epoch(net, loader, opt, nn.CrossEntropyLoss(), "cpu")
    net.train()
    after = evaluate(net, loader, 2, "cpu")
    assert net.training and after["miou"] > max(before, 0.9) and after["pixel_acc"] > 0.95 and loss < 0.3
    assert len(after["iou_per_class"]) == 2
    with pytest.raises(ValueError, match="no batches"):
        evaluate(net, [], 2, "cpu")
