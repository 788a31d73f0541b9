"""Space-to-depth as one strided copy: :func:`pixel_unshuffle` gives exactly ``torch.nn.functional.pixel_unshuffle``'s
result as a view and one ``reshape`` copy, which on the CPU runs faster than the aten op at image sizes
(BENCHMARKS.md, "Where the time goes at 481×321").
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["pixel_unshuffle"]


def pixel_unshuffle(x: Tensor, factor: int) -> Tensor:
    """``(B, C, H, W)`` → ``(B, C·f², H/f, W/f)``, channel ``c·f² + i·f + j`` holding pixel ``(f·y + i, f·x + j)`` of
    channel ``c`` (``F.pixel_unshuffle``'s order); ``H`` and ``W`` multiples of ``f``.

    >>> import torch
    >>> x = torch.rand(2, 3, 8, 12)
    >>> torch.equal(pixel_unshuffle(x, 4), torch.nn.functional.pixel_unshuffle(x, 4))
    True
    """
    b, c, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"pixel_unshuffle: height and width must be multiples of {factor}, got {h}x{w}")
    return x.view(b, c, h // factor, factor, w // factor, factor).permute(0, 1, 3, 5, 2, 4).reshape(b, c * factor * factor, h // factor, w // factor)
