"""Starting weights of a kernel-prediction network: the released init and the identity start."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["identity_init_", "released_init_"]


def released_init_(model: nn.Module) -> None:
    """The released code's init: ``xavier_normal_(gain=0.02)`` on every convolution's weight, default bias init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight, gain=0.02)


@torch.no_grad()
def identity_init_(outc: nn.Conv2d, fusion: nn.Conv2d | None, kernel_size: int, channels: int, groups: int) -> None:
    """Start as the identity instead of near zero: every kernel the centre tap (``outc``'s bias) and the fusion the mean
    over its ``groups`` (dilations) of each colour."""
    k2 = kernel_size**2
    outc.bias.zero_()
    outc.bias[k2 // 2 :: k2] = 1.0
    if fusion is None:
        return
    fusion.weight.mul_(0.01)
    fusion.bias.zero_()
    for c in range(channels):
        for r in range(groups):
            fusion.weight[c, r * channels + c, 1, 1] += 1.0 / groups
