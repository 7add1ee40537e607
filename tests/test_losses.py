"""cvlab.losses: the softmax focal loss against its formula and cross-entropy."""
import pytest
import torch
from torch import nn

from cvlab.losses import FocalLoss


def test_focal_loss():
    torch.manual_seed(0)
    logits, target = torch.randn(12, 4), torch.randint(0, 4, (12,))
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5])
    assert torch.allclose(FocalLoss(gamma=0)(logits, target), nn.functional.cross_entropy(logits, target))
    assert torch.allclose(FocalLoss(gamma=0, weight=weight)(logits, target),
                          nn.functional.cross_entropy(logits, target, weight=weight))
    p = torch.softmax(logits, 1)[torch.arange(12), target]
    expected = -((1 - p) ** 2) * torch.log(p)
    assert torch.allclose(FocalLoss(gamma=2, reduction="none")(logits, target), expected, atol=1e-6)
    assert torch.allclose(FocalLoss(gamma=2, reduction="sum")(logits, target), expected.sum(), atol=1e-5)
    # easy samples count less: a confident right answer is down-weighted far more than CE does
    easy = torch.tensor([[8.0, 0, 0, 0]])
    assert FocalLoss(2)(easy, torch.tensor([0])) < 1e-3 * nn.functional.cross_entropy(easy, torch.tensor([0]))
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="avg")

