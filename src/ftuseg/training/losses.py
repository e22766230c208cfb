"""BCE + soft Dice: BCE for calibrated probabilities, Dice for the metric and class imbalance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * (1 - soft Dice)`` of logits (B, 1, H, W) against a target.

    The target is the mask (B, 1, H, W), or the mask and a per-pixel loss weight (B, 2, H, W): a
    partially annotated image (ROI annotations) has weight 0 outside its ROIs, and those pixels then add
    nothing to either term (nor to the gradient). BCE is averaged over the weighted pixels.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        target = target.float()
        weight = None
        if target.shape[1] == logits.shape[1] + 1:
            target, weight = target[:, : logits.shape[1]], target[:, logits.shape[1]:]
        prob = torch.sigmoid(logits)
        dims = tuple(range(1, prob.ndim))
        if weight is None:
            bce = F.binary_cross_entropy_with_logits(logits, target)
            inter = (prob * target).sum(dims)
            denom = prob.sum(dims) + target.sum(dims)
        else:
            per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            bce = (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)
            inter = (prob * target * weight).sum(dims)
            denom = (prob * weight).sum(dims) + (target * weight).sum(dims)
        dice = 1.0 - (2.0 * inter + self.smooth) / (denom + self.smooth)
        return self.bce_weight * bce + self.dice_weight * dice.mean()
