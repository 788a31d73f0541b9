"""Starting weights of a kernel-prediction network: the released init or He's, and the identity start."""

from __future__ import annotations

import torch
from torch import nn

from .gate import open_gate_, open_image_gate_

__all__ = ["INITS", "he_init_", "identity_init_", "kpn_init_", "released_init_"]

#: ``EfDeRainConfig.init`` values
INITS = ("released", "he")
#: an EfDeRain's children that map features to outputs (kernels, fusion, gates): they start small whatever the init
OUTPUT_HEADS = ("outc", "conv_final", "gate", "gate_global")


def released_init_(model: nn.Module) -> None:
    """The released code's init: ``xavier_normal_(gain=0.02)`` on every convolution's weight, default bias init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight, gain=0.02)


def he_init_(model: nn.Module) -> None:
    """He's init (``kaiming_normal_``, fan-in, ReLU gain) on the convolutions of the KPN's blocks, zero biases; the output
    heads (:data:`OUTPUT_HEADS`) keep :func:`released_init_`'s small weights. A chain of ReLU convolutions then keeps
    its activations' scale from the first step; with the released gain (0.02) each layer shrinks them about fifty-fold,
    so a deep KPN computes little more than its biases and learns slowly at first."""
    released_init_(model)
    for name, child in model.named_children():
        if name not in OUTPUT_HEADS:
            _he_convolutions_(child)


def _he_convolutions_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


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


def kpn_init_(model: nn.Module) -> None:
    """An :class:`~derain.models.efderain.EfDeRain`'s start: ``config.init`` (:func:`released_init_` or :func:`he_init_`),
    its gates open (:mod:`.gate`), a judge of its own (``config.judge_widths``) He's init whatever ``config.init`` (it
    always trains from scratch; at the released gain its features would not tell images apart), and with
    ``config.identity_init`` :func:`identity_init_`."""
    cfg = model.config
    (he_init_ if cfg.init == "he" else released_init_)(model)
    if getattr(cfg, "judge_widths", ()):
        _he_convolutions_(model.judge)
    if cfg.gate:
        open_gate_(model.gate)
    if cfg.gate_global:
        open_image_gate_(model.gate_global)
    if cfg.identity_init:
        identity_init_(model.outc, getattr(model, "conv_final", None), cfg.kernel_size, cfg.in_channels, len(cfg.dilations))
