"""Training losses: L1 and the paper's L1 − λ·SSIM (Eq. 5)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..metrics import ssim_torch

__all__ = ["L1SSIMLoss", "build_loss"]


class L1SSIMLoss(nn.Module):
    """``L1(pred, target) − λ·SSIM(pred, target)`` (paper Eq. 5, λ = 0.2).

    SSIM as the released training code: 11×11 Gaussian (σ = 1.5) per channel, zero "same"
    padding, C1 = 0.01², C2 = 0.03² (data range 1), mean over the map. ``ssim_weight=0`` is plain L1.

    Example:
        >>> import torch
        >>> x = torch.rand(1, 3, 16, 16)
        >>> round(float(L1SSIMLoss()(x, x)), 6)
        -0.2
    """

    def __init__(self, ssim_weight: float = 0.2) -> None:
        super().__init__()
        self.ssim_weight = ssim_weight

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        loss = F.l1_loss(pred, target)
        if self.ssim_weight:
            loss = loss - self.ssim_weight * ssim_torch(pred.float(), target.float(), padding="same")
        return loss


def build_loss(name: str, ssim_weight: float = 0.2) -> L1SSIMLoss:
    """``"l1"`` or ``"l1_ssim"``."""
    if name == "l1":
        return L1SSIMLoss(0.0)
    if name == "l1_ssim":
        return L1SSIMLoss(ssim_weight)
    raise ValueError(f"loss must be 'l1' or 'l1_ssim', got {name!r}")
