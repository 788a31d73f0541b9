"""The no-harm constraints of a kernel-prediction network, as projections of a layer's parameters.

Each takes the raw (trained) weight and bias and returns them as applied; the state dict keeps the raw
ones, so the constraint holds whatever an optimiser does to them.

* :func:`unit_kernel_params` (``unit_kernels``): every predicted kernel sums to one, so each filtered pixel is an
  affine combination of its neighbours (flat areas come back exactly; rain can only be replaced from its
  surroundings, not dimmed in place).
* :func:`channel_preserving_params` (``channel_fusion``): the fusion maps each colour onto itself with weights
  summing to one, cross-colour weights summing to zero, and no bias (no global brightness or colour shift).

>>> import torch
>>> w, b = unit_kernel_params(torch.randn(18, 4, 1, 1), torch.randn(18), kernel_size=3)
>>> torch.allclose(b.view(2, 9).sum(1), torch.ones(2)), torch.allclose(w.view(2, 9, 4).sum(1), torch.zeros(2, 4), atol=1e-6)
(True, True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["channel_preserving_params", "conv_fp32", "unit_kernel_params"]


def unit_kernel_params(weight: Tensor, bias: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """A 1×1 kernel head's ``(weight, bias)`` projected so each predicted kernel sums to one.

    Output channels are grouped per colour (``c·k² + tap``); within a group the weights are centred (the
    kernel's sum no longer depends on the features) and the bias is centred plus ``1/k²``. Bilinear
    upsampling of the kernels keeps the sum (its weights sum to one).
    """
    k2 = kernel_size**2
    wg = weight.view(-1, k2, *weight.shape[1:])
    bg = bias.view(-1, k2)
    w = (wg - wg.mean(1, keepdim=True)).reshape(weight.shape)
    b = (bg - bg.mean(1, keepdim=True) + 1.0 / k2).reshape(bias.shape)
    return w, b


def channel_preserving_params(weight: Tensor, bias: Tensor, channels: int, groups: int) -> tuple[Tensor, Tensor]:
    """A fusion convolution's ``(weight, bias)`` projected so each of ``channels`` colours is preserved.

    Input channel ``d·C + c'`` is group (dilation) ``d`` of colour ``c'``. For output colour ``c`` the weights over
    its own colour (all groups and taps) are shifted to sum to one, those over the other colours to sum to
    zero, and the bias is zero (``bias * 0``: in the graph, so DDP sees every parameter get a gradient).
    """
    c, n = channels, groups
    k = weight.shape[-1] * weight.shape[-2]
    g = weight.view(c, n, c, -1)  # out, group, in-colour, tap
    eye = torch.eye(c, dtype=weight.dtype, device=weight.device).view(c, 1, c, 1)
    g = g - g.mean((1, 3), keepdim=True) + eye / (n * k)
    return g.reshape(weight.shape), bias * 0


def conv_fp32(feat: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """A convolution (1×1: a kernel head) in fp32 whatever the autocast: kernels projected to sum to one keep that sum to
    fp32 accuracy (in bf16 a sum is only good to about 0.4 %, a visible brightness error)."""
    with torch.autocast(feat.device.type, enabled=False):
        return F.conv2d(feat.float(), weight.float(), bias.float())
