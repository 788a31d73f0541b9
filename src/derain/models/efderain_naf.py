"""EfDeRain whose kernel prediction network is built of NAFNet's gated blocks (Chen et al., ECCV 2022).

Each block of the KPN is one 3×3 convolution to its width (+ ReLU) followed by ``depth`` NAF blocks:
``x + β·W₂(SG(DW(W₁ x)))`` then ``x + γ·W₄(SG(W₃ x))``, where ``W`` are 1×1 convolutions (to twice the width
before each simple gate ``SG(a, b) = a·b``) and ``DW`` a depthwise 3×3. Without NAFNet's channel attention (it
pools over the image, so tiles of one photo would be derained differently) and layer norm (a per-pixel
normalisation over channels: memory-bound work the CPU spends more time on than on the convolutions here).
``β`` and ``γ`` start at zero (each block starts as the identity); the blocks' convolutions have PyTorch's
default init whenever the network is (re)initialised.

>>> model = NAFEfDeRain(EfDeRainConfig(widths=(8, 8, 8), depth=1))
>>> model(torch.rand(1, 3, 17, 33)).shape
torch.Size([1, 3, 17, 33])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .efderain import Basic, EfDeRain, EfDeRainConfig

__all__ = ["NAFBlock", "NAFBasic", "NAFEfDeRain"]


class NAFBlock(nn.Module):
    """NAFNet's block without layer norm and channel attention (see the module docstring)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.w1 = nn.Conv2d(c, 2 * c, 1)
        self.dw = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.w2 = nn.Conv2d(c, c, 1)
        self.w3 = nn.Conv2d(c, 2 * c, 1)
        self.w4 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def reset_parameters(self) -> None:
        """PyTorch's default init of the convolutions; ``β = γ = 0``."""
        for conv in (self.w1, self.dw, self.w2, self.w3, self.w4):
            conv.reset_parameters()
        nn.init.zeros_(self.beta)
        nn.init.zeros_(self.gamma)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.dw(self.w1(x)).chunk(2, dim=1)
        x = x + self.beta * self.w2(a * b)
        a, b = self.w3(x).chunk(2, dim=1)
        return x + self.gamma * self.w4(a * b)


class NAFBasic(Basic):
    """A KPN block: 3×3 convolution + ReLU, then ``depth`` :class:`NAFBlock` (stored as ``.conv1`` like :class:`Basic`)."""

    def __init__(self, in_channels: int, out_channels: int, depth: int = 1) -> None:
        nn.Sequential.__init__(self)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(True), *(NAFBlock(out_channels) for _ in range(depth))
        )


class NAFEfDeRain(EfDeRain):
    """:class:`EfDeRain` (same config, same full-resolution stage) with :class:`NAFBasic` blocks in its KPN."""

    def __init__(self, config: EfDeRainConfig = EfDeRainConfig()) -> None:
        super().__init__(config)
        for name, block in list(self.named_children()):
            if isinstance(block, Basic):
                first = block.conv1[0]
                setattr(self, name, NAFBasic(first.in_channels, first.out_channels, config.depth))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """:meth:`EfDeRain.reset_parameters` (the outputs' init), then each NAF block's own init."""
        super().reset_parameters()
        for block in self.modules():
            if isinstance(block, NAFBlock):
                block.reset_parameters()
