"""cvlab.segmenters: a U-Net that keeps the size, LRASPP on MobileNetV2 with frozen blocks, and the
full-resolution refinement that learns pixel-sharp edges."""
import pytest
import torch
from torch import nn

from cvlab.segmenters import ImageRefinement, UNet, lraspp_mobilenet_v2


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


def test_image_refinement_keeps_the_size_and_sharpens_from_the_image():
    model = lraspp_mobilenet_v2(11, frozen_blocks=4, refine_channels=8, pretrained_backbone=False)
    assert isinstance(model, ImageRefinement) and model(torch.rand(2, 3, 32, 32))["out"].shape == (2, 11, 32, 32)
    # a 1x1-pixel pattern a stride-8 head cannot draw but the refinement can learn from the image
    torch.manual_seed(0)
    coarse = nn.Conv2d(3, 2, 8, stride=8)
    net = ImageRefinement(nn.Sequential(coarse, nn.Upsample(scale_factor=8)), 2, channels=8)
    images = torch.rand(16, 3, 16, 16)
    masks = (images[:, 0] > 0.5).long()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        loss = nn.functional.cross_entropy(net(images)["out"], masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    assert (net(images)["out"].argmax(1) == masks).float().mean() > 0.95
    with pytest.raises(ValueError, match="refine_channels >= 0"):
        lraspp_mobilenet_v2(11, refine_channels=-1, pretrained_backbone=False)
