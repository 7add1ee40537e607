"""cvlab.segmentation: mask checks that name the fix, scene masks and tensors, Dice against
torchmetrics, mIoU / pixel accuracy from torchmetrics, overlays and error maps."""
import pytest
import torch
from torch import nn

from cvlab.scenes import make_scenes
from cvlab.transforms import IMAGENET_MEAN
from cvlab.segmentation import (IGNORE_INDEX, check_mask, class_colors, dice_loss, draw_mask,
                                error_mask, evaluate, plot_segmentation, predict_masks, segmentation_tensors,
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


def test_dice_loss_matches_torchmetrics_dice_score():
    from torchmetrics.segmentation import DiceScore
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 16, 16), generator=g)
    perfect = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float() * 50  # softmax ~ one-hot
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    hard = torch.randint(0, 4, (2, 16, 16), generator=g)
    logits = torch.nn.functional.one_hot(hard, 4).permute(0, 3, 1, 2).float() * 50
    dice = DiceScore(num_classes=4, average="macro", input_format="index", include_background=True)
    for i in range(2):   # torchmetrics scores image by image; every class is in both images here
        ours = 1 - dice_loss(logits[i:i + 1], target[i:i + 1], smooth=0.0).item()
        assert ours == pytest.approx(float(dice(hard[i:i + 1], target[i:i + 1])), abs=1e-4)
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


def test_segmentation_tensors_give_rgb_images_and_class_maps():
    scenes = make_scenes(torch.full((4, 28, 28), 200, dtype=torch.uint8), torch.tensor([0, 1, 2, 3]), 3,
                         size=32, min_items=1, max_items=2, scale=(8, 12))
    images, masks = segmentation_tensors(scenes)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32 and 0 <= images.min() <= images.max() <= 1
    assert masks.shape == (3, 32, 32) and masks.dtype == torch.int64
    assert torch.equal(masks[1], semantic_mask(scenes[1][1], (32, 32)))
    normalised, _ = segmentation_tensors(scenes, imagenet_normalize=True)
    assert normalised[0, 0, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[0] / 0.229, abs=1e-5)   # black pixel
    with pytest.raises(ValueError, match="different sizes"):
        segmentation_tensors([scenes[0], (torch.zeros(1, 16, 16, dtype=torch.uint8), scenes[0][1])])
    with pytest.raises(ValueError, match="no scenes"):
        segmentation_tensors([])


def test_draw_mask_paints_only_the_chosen_classes_and_never_ignored_pixels():
    image = torch.zeros(1, 8, 8, dtype=torch.uint8)
    mask = torch.zeros(8, 8, dtype=torch.int64)
    mask[:2], mask[2:4], mask[4:6] = 1, 2, IGNORE_INDEX
    colors = class_colors(3)
    drawn = draw_mask(image, mask, 3, alpha=1.0)
    assert drawn.shape == (3, 8, 8) and drawn.dtype == torch.uint8
    assert tuple(drawn[:, 0, 0].tolist()) == colors[1] and tuple(drawn[:, 2, 0].tolist()) == colors[2]
    assert drawn[:, 4:].sum() == 0                                  # ignored and background pixels stay black
    only_two = draw_mask(image, mask, 3, alpha=1.0, classes=[2])
    assert only_two[:, :2].sum() == 0 and tuple(only_two[:, 2, 0].tolist()) == colors[2]
    assert torch.equal(draw_mask(image, mask, 3, alpha=0.0), image.repeat(3, 1, 1))
    with pytest.raises(ValueError, match="is \\(4, 8\\) but its image is \\(8, 8\\)"):
        draw_mask(image, mask[:4], 3)
    with pytest.raises(ValueError, match="opacity"):
        draw_mask(image, mask, 3, alpha=1.5)
    assert len(class_colors(11)) == 11 and class_colors(11)[0] == (0, 0, 0) and len(set(class_colors(11))) == 11


def test_error_mask_and_predict_masks():
    target = torch.tensor([[0, 1], [2, IGNORE_INDEX]])
    assert error_mask(torch.tensor([[0, 2], [2, 1]]), target).tolist() == [[False, True], [False, False]]
    with pytest.raises(ValueError, match="one shape"):
        error_mask(torch.zeros(2, 3), target)
    net = nn.Conv2d(3, 4, 1)
    images = torch.rand(5, 3, 6, 6)
    net.train()
    pred = predict_masks(net, images, batch_size=2, device="cpu")
    assert pred.shape == (5, 6, 6) and pred.dtype == torch.int64 and net.training
    assert torch.equal(pred, net(images).argmax(1))


def test_plot_segmentation_draws_image_truth_prediction_and_errors():
    import matplotlib.pyplot as plt
    images = torch.rand(2, 1, 8, 8)
    truth = torch.randint(0, 3, (2, 8, 8))
    fig = plot_segmentation(images, truth, truth.flip(-1), ["background", "a", "b"])
    assert len(fig.axes) == 8 and fig.axes[0].get_ylabel() == "image"
    assert fig.axes[6].get_title().endswith("% wrong")
    assert len(fig.legends[0].get_texts()) == 2
    plt.close(fig)
    fig = plot_segmentation(images.expand(-1, 3, -1, -1), truth, None, ["background", "a", "b"])
    assert len(fig.axes) == 4
    plt.close(fig)
