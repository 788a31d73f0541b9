"""The rain gate of a kernel-prediction network: heads, squashing and their starting values.

The network predicts a per-pixel gate ``m`` in (0, 1) (a head on the kernel features: logits, upsampled like the
kernels, then a sigmoid) and outputs ``x + m·(y − x)`` for the filtered-and-fused ``y``: where it sees no rain it
returns its input exactly by closing the gate. An optional image head (a linear layer on the mean of the deepest
features, or of a separate :class:`ImageJudge`'s) multiplies the map by one factor per image, so a photo judged dry as a
whole comes back as it went in.
The squashing itself (upsampling, sigmoid, the image factor) is :func:`derain.ops.full_resolution.gate_map`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GATE_GAIN", "GATE_GLOBAL_INIT_BIAS", "GATE_INIT_BIAS", "ImageJudge", "gate_head", "gate_logits", "gate_parts",
           "image_factor", "open_gate_", "open_image_gate_"]

GATE_INIT_BIAS = 3.0  # sigmoid(3) = 0.95: the gate starts open
# The kernel features the gate reads are small (about 0.05-0.2 after ReLU), so the head's logits are
# scaled: with Adam each parameter moves about ``lr`` per step whatever its gradient's size, and the
# gain makes that a useful rate of change of the gate.
GATE_GAIN = 10.0
GATE_GLOBAL_INIT_BIAS = 4.6  # sigmoid(4.6) = 0.99: the image gate starts open


def gate_head(channels: int, width: int = 0) -> nn.Module:
    """``width`` 0: one 1×1 convolution to the logit; else a 3×3 convolution to ``width`` channels, ReLU, the 1×1."""
    if not width:
        return nn.Conv2d(channels, 1, 1)
    return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(True), nn.Conv2d(width, 1, 1))


class ImageJudge(nn.Sequential):
    """Features for the image gate of their own: an area average over ``scale×scale`` blocks, then one strided 3×3
    convolution + ReLU per width (each halves the resolution). The image head reads their mean instead of the
    KPN's deepest features, so training the KPN does not move the judgement and the judgement's loss does not
    compete with the kernels for the KPN's features.

    >>> ImageJudge(3, (8, 16))(torch.rand(2, 3, 64, 48)).shape
    torch.Size([2, 16, 8, 6])
    """

    def __init__(self, channels: int, widths: tuple[int, ...], scale: int = 2) -> None:
        layers: list[nn.Module] = [nn.AvgPool2d(scale, scale, ceil_mode=True)] if scale > 1 else []
        for n, width in enumerate(widths):
            layers += [nn.Conv2d(channels if n == 0 else widths[n - 1], width, 3, stride=2, padding=1), nn.ReLU(True)]
        super().__init__(*layers)


def gate_logits(head: nn.Module, feat: Tensor) -> Tensor:
    """The gate's logits ``(B, 1, h, w)``, fp32, at the features' resolution (the head's output times :data:`GATE_GAIN`)."""
    return head(feat).float() * GATE_GAIN


def image_factor(head: nn.Module, deep: Tensor) -> Tensor:
    """Each image's factor ``(B, 1)`` in (0, 1) on the gate, from its deepest features ``deep`` ``(B, C, h, w)``."""
    return torch.sigmoid(head(deep.float().mean((2, 3))) * GATE_GAIN)


@torch.no_grad()
def open_gate_(head: nn.Module) -> None:
    """Start a :func:`gate_head` open (bias :data:`GATE_INIT_BIAS`): a gated network initialised from an ungated one's
    weights starts close to it. A wide head's hidden convolution gets PyTorch's default init (with the released
    gain its activations vanish and it does not learn)."""
    out = head[-1] if isinstance(head, nn.Sequential) else head
    out.bias.fill_(GATE_INIT_BIAS / GATE_GAIN)
    if isinstance(head, nn.Sequential):
        head[0].reset_parameters()


@torch.no_grad()
def open_image_gate_(head: nn.Linear) -> None:
    """Start the image head fully open (0.99) and independent of the input."""
    head.weight.zero_()
    head.bias.fill_(GATE_GLOBAL_INIT_BIAS / GATE_GAIN)


def gate_parts(
    head: nn.Module, image_head: nn.Module | None, feat: Tensor, deep: Tensor | None = None, whole: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The gate before upsampling: its logits at the kernels' resolution (:func:`gate_logits`) and, with an image
    head, each image's factor ``(B, 1)``: ``whole`` where given (a judgement made elsewhere), else from ``deep``."""
    logits = gate_logits(head, feat)
    if image_head is None:
        return logits, None
    if whole is not None:
        return logits, whole.float().reshape(-1, 1)
    if deep is None:
        raise ValueError("gate_global needs the deepest features (EfDeRain.features)")
    return logits, image_factor(image_head, deep)
