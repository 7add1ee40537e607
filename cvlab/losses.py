"""Loss functions beyond ``torch.nn``'s: the focal loss for imbalanced classes.

``nn.CrossEntropyLoss`` (with ``weight=`` for class weights, ``label_smoothing=``) covers most
lessons; what it cannot do lives here.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["FocalLoss"]


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection", arXiv:1708.02002).

    ``FL = -w_y * (1 - p_y) ** gamma * log(p_y)``, where ``p_y`` is the softmax probability of the
    true class: easy, confident samples (p_y near 1) count little, hard ones count fully. With
    ``gamma=0`` it is cross-entropy (``nn.CrossEntropyLoss`` with the same ``weight``).
    torchvision's ``ops.sigmoid_focal_loss`` is the binary / multi-label form; this is the
    multi-class form.

    Args:
        gamma: focusing parameter >= 0 (2 in the paper).
        weight: optional float (num_classes,) per-class weights (the paper's alpha).
        reduction: "mean" (weighted like ``nn.CrossEntropyLoss``: divided by the sum of the
            samples' weights), "sum" or "none".

    Shapes: logits float (B, num_classes), target int64 (B,) -> a scalar, or (B,) for "none".

    Raises:
        ValueError: negative gamma or an unknown reduction.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, reduction: str = "mean"):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.gamma = float(gamma)
        self.reduction = reduction
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits.float(), dim=1).gather(1, target[:, None])[:, 0]
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        w = self.weight[target] if self.weight is not None else torch.ones_like(loss)
        loss = loss * w
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return loss.sum() / w.sum()
