"""PReNet (Ren et al., CVPR 2019): the progressive recurrent deraining baseline.

"Progressive Image Deraining Networks: A Better and Simpler Baseline". One small residual
network is applied ``T`` times (stages share their weights); every stage sees the rainy image
next to the previous stage's estimate, and a convolutional LSTM carries a hidden state across
the stages. Per stage, with ``y`` the rainy input, ``x`` the previous estimate (``x = y``
before the first stage) and ``h = c = 0`` initially::

    x = ReLU(conv0(cat[y, x]))                       # f_in: 6 -> 32, 3x3
    z = cat[x, h]                                    # 64 channels
    i, f, o = sigmoid(conv_i(z)), sigmoid(conv_f(z)), sigmoid(conv_o(z))
    g = tanh(conv_g(z))                              # LSTM gates: 64 -> 32, 3x3 each
    c = f * c + i * g
    h = o * tanh(c)
    x = h
    for n in 1..5:                                   # f_res: 5 ResBlocks, own weights
        x = ReLU(res_convN(x) + x)                   # res_convN = conv3x3, ReLU, conv3x3, ReLU
    x = conv(x) + y                                  # f_out: 32 -> 3, 3x3, no activation

The output is ``x`` after the last stage, unclamped. All convolutions are 3×3 with padding 1
and stride 1, so any image size works without padding. Module and parameter names follow the
authors' release (``conv0.0``, ``res_conv1.0``/``.2`` … ``res_conv5``, ``conv_i.0``,
``conv_f.0``, ``conv_g.0``, ``conv_o.0``, ``conv.0``), so its ``Rain100L.pth``/``Rain100H.pth``
(168,963 parameters) load strictly. ``recurrent=False`` gives the paper's PRN (no LSTM).

For CPU speed the four gate convolutions run as one 64 -> 128 convolution, ``tanh`` of the
``g`` gate is computed as ``2 * sigmoid(2a) - 1`` in the same sigmoid; the result is the
released network's to float rounding (about 1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch_config import ArchConfig

__all__ = ["PReNetConfig", "PReNet"]


@dataclass(frozen=True)
class PReNetConfig(ArchConfig):
    """Architecture of a :class:`PReNet`.

    Attributes:
        stages: number of recursive stages ``T`` (weights shared between stages).
        channels: feature width of every hidden layer.
        res_blocks: residual blocks per stage (each with its own weights).
        recurrent: carry a convolutional LSTM state across stages (PReNet); without it the
            network is the paper's PRN.
    """

    stages: int = 6
    channels: int = 32
    res_blocks: int = 5
    recurrent: bool = True

    def __post_init__(self) -> None:
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.res_blocks < 0:
            raise ValueError(f"res_blocks must be >= 0, got {self.res_blocks}")



def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class PReNet(nn.Module):
    """Progressive recurrent deraining network (see the module docstring for the structure).

    ``forward`` takes ``(B, 3, H, W)`` images in [0, 1] of any size and returns the last
    stage's estimate, same shape, unclamped; :meth:`stage_outputs` returns every stage's.

    Example:
        >>> model = PReNet(PReNetConfig(stages=2, channels=8, res_blocks=1))
        >>> model(torch.rand(1, 3, 17, 33)).shape
        torch.Size([1, 3, 17, 33])
        >>> sum(p.numel() for p in PReNet().parameters())
        168963
    """

    in_channels = 3

    def __init__(self, config: PReNetConfig = PReNetConfig()) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        self.conv0 = nn.Sequential(_conv(2 * self.in_channels, ch), nn.ReLU())
        for n in range(1, config.res_blocks + 1):
            self.add_module(f"res_conv{n}", nn.Sequential(_conv(ch, ch), nn.ReLU(), _conv(ch, ch), nn.ReLU()))
        if config.recurrent:
            self.conv_i = nn.Sequential(_conv(2 * ch, ch), nn.Sigmoid())
            self.conv_f = nn.Sequential(_conv(2 * ch, ch), nn.Sigmoid())
            self.conv_g = nn.Sequential(_conv(2 * ch, ch), nn.Tanh())
            self.conv_o = nn.Sequential(_conv(2 * ch, ch), nn.Sigmoid())
        self.conv = nn.Sequential(_conv(ch, self.in_channels))

    def _gate_conv(self) -> tuple[Tensor, Tensor]:
        """The four LSTM gate convolutions stacked (order i, f, g, o) to run as one conv.

        The ``g`` rows are doubled so that one sigmoid over all gates gives ``tanh`` for ``g``
        through ``tanh(a) = 2 * sigmoid(2a) - 1`` (a sigmoid over the whole tensor is much
        cheaper on CPU than a tanh over a strided slice of it).
        """
        gates = (self.conv_i[0], self.conv_f[0], self.conv_g[0], self.conv_o[0])
        scale = (1.0, 1.0, 2.0, 1.0)
        weight = torch.cat([g.weight * s for g, s in zip(gates, scale)], dim=0)
        bias = torch.cat([g.bias * s for g, s in zip(gates, scale)], dim=0)
        return weight, bias

    def stage_outputs(self, y: Tensor) -> list[Tensor]:
        """Estimates after each of the ``config.stages`` stages for rainy images ``y``."""
        if y.dim() != 4 or y.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(y.shape)}")
        cfg = self.config
        blocks = [getattr(self, f"res_conv{n}") for n in range(1, cfg.res_blocks + 1)]
        if cfg.recurrent:
            gate_weight, gate_bias = self._gate_conv()
            h = c = None  # zero LSTM state, made below in the layout of the features
        x = y
        outputs = []
        for _ in range(cfg.stages):
            x = self.conv0(torch.cat((y, x), dim=1))
            if cfg.recurrent:
                if h is None:
                    h = c = torch.zeros_like(x, dtype=y.dtype)
                z = F.conv2d(torch.cat((x, h), dim=1), gate_weight, gate_bias, padding=1)
                i, f, g, o = z.sigmoid_().chunk(4, dim=1)
                c = f * c + i * (2 * g - 1)  # 2 * g - 1 = tanh of g's pre-activation
                h = o * torch.tanh(c)
                x = h
            for block in blocks:
                x = F.relu(block(x) + x)
            x = self.conv(x) + y
            outputs.append(x)
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        return self.stage_outputs(x)[-1]
