"""Training losses: L1 and the paper's L1 − λ·SSIM (Eq. 5); the rain gate's supervision, per pixel and per image."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..metrics import ssim_torch

__all__ = ["RAIN_MASK_THRESHOLD", "L1SSIMLoss", "build_loss", "gate_loss", "judgement_loss", "rain_mask"]

RAIN_MASK_THRESHOLD = 3 / 255


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


def rain_mask(rainy: Tensor, clean: Tensor, threshold: float = RAIN_MASK_THRESHOLD) -> Tensor:
    """``(B, 1, H, W)``: 1 where a pixel or one of its 8 neighbours differs from the clean image by more than
    ``threshold`` in some channel (rain there), else 0. A rain-free sample's mask is all 0.

    Example:
        >>> import torch
        >>> clean = torch.zeros(1, 3, 5, 5)
        >>> rainy = clean.clone(); rainy[0, 1, 2, 2] = 0.5
        >>> rain_mask(rainy, clean)[0, 0].sum().item(), rain_mask(clean, clean).sum().item()
        (9.0, 0.0)
    """
    if rainy.shape != clean.shape or rainy.dim() != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(rainy.shape)} and {tuple(clean.shape)}")
    changed = ((rainy.float() - clean.float()).abs().amax(1, keepdim=True) > threshold).float()
    return F.max_pool2d(changed, 3, 1, 1)


def gate_loss(gate: Tensor, rainy: Tensor, clean: Tensor, between_streaks: bool = True) -> Tensor:
    """Binary cross-entropy of the rain gate ``(B, 1, H, W)`` (probabilities) against :func:`rain_mask`.

    Without it the gate learns only through the output's loss, whose gradient is ``filtered − input``:
    on rain-free content that is near zero, so the gate barely moves. The mask tells it where rain is.
    ``between_streaks=False`` leaves out the pixels of a rainy sample that the rain did not change (a
    gate with a factor per image, ``gate_global``: they would pull the whole image's gate down; the
    output's loss still sees them); rain-free samples count whole.
    """
    mask = rain_mask(rainy, clean)
    bce = F.binary_cross_entropy(gate.float().clamp(1e-6, 1 - 1e-6), mask, reduction="none")
    if between_streaks:
        return bce.mean()
    rainy_sample = mask.amax((1, 2, 3), keepdim=True)
    weight = mask + (1 - rainy_sample)  # rain pixels of rainy samples, every pixel of rain-free ones
    return (bce * weight).sum() / weight.sum().clamp(min=1)


def judgement_loss(factor: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy of each image's gate factor ``(B, 1)`` (``image_gate``, probabilities) against its label
    (1: a rainy photo, 0: a dry one; :mod:`derain.training.judgement`), the mean over the batch.

    Example:
        >>> import torch
        >>> right, wrong = torch.tensor([[0.9], [0.1]]), torch.tensor([[0.1], [0.9]])
        >>> labels = torch.tensor([[1.0], [0.0]])
        >>> bool(judgement_loss(right, labels) < judgement_loss(wrong, labels))
        True
    """
    if factor.shape != labels.shape:
        raise ValueError(f"expected one factor per label, got {tuple(factor.shape)} and {tuple(labels.shape)}")
    return F.binary_cross_entropy(factor.float().clamp(1e-6, 1 - 1e-6), labels.float())
