"""Padding an image for a network: to a multiple of its downsampling (:func:`pad_to_multiple`), by a border
on every side (:func:`pad_border`), and both as the canvas a staged network runs on (:func:`pad_canvas`),
reflecting where the image is large enough, else replicating its edge."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["pad_border", "pad_canvas", "pad_to_multiple"]


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


def pad_canvas(x: Tensor, border: int, multiple: int, centre: bool = False) -> tuple[Tensor, tuple[int, int]]:
    """``x`` (…, H, W) on the canvas a staged network runs on, and the image's top-left ``(top, left)`` in it.

    The image is reflect-padded by ``border`` on every side, then to multiples of ``multiple``: the slack goes to
    the bottom/right (``centre=False``: :func:`pad_border`, then :func:`pad_to_multiple`), or is split around the
    image, its odd pixel at the bottom/right (``centre=True``), so that no side of the image lies nearer the
    canvas's edge, where the network's convolutions zero-pad, than ``border + slack // 2``.

    >>> import torch
    >>> canvas, (top, left) = pad_canvas(torch.zeros(1, 3, 21, 30), 5, 16, centre=True)
    >>> tuple(canvas.shape[-2:]), (top, left)
    ((32, 48), (5, 9))
    """
    if not centre:
        return pad_to_multiple(pad_border(x, border), multiple)[0], (border, border)
    h, w = x.shape[-2:]
    sh, sw = (-(h + 2 * border)) % multiple, (-(w + 2 * border)) % multiple
    top, left = border + sh // 2, border + sw // 2
    bottom, right = border + sh - sh // 2, border + sw - sw // 2
    if top or bottom or left or right:
        mode = "reflect" if max(top, bottom) < h and max(left, right) < w else "replicate"
        x = F.pad(x, (left, right, top, bottom), mode=mode)
    return x, (top, left)
