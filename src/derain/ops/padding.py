"""Padding an image for a network: to a multiple of its downsampling (:func:`pad_to_multiple`) and by a border
on every side (:func:`pad_border`), reflecting where the image is large enough, else replicating its edge."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["pad_border", "pad_to_multiple"]


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``x`` (…, H, W) at the bottom/right to multiples of ``multiple``; return it and (H, W).

    Reflect padding where the side is long enough, edge replication otherwise (tiny inputs).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def pad_border(x: Tensor, border: int) -> Tensor:
    """Reflect-pad ``x`` (…, H, W) by ``border`` on every side (edge replication for tiny inputs)."""
    if not border:
        return x
    h, w = x.shape[-2:]
    return F.pad(x, (border,) * 4, mode="reflect" if border < min(h, w) else "replicate")
