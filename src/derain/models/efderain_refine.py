"""EfDeRain plus a low-resolution refinement that reaches past the filtering's footprint.

The pixel-wise dilation filtering replaces each pixel from its neighbours at most ``max(dilations)·(k//2)``
pixels away (5 with 3×3 taps at dilation ≤ 4 and the fusion): a streak wider than that can only be dimmed.
A small residual CNN at ``1/scale`` resolution (pixel-unshuffle of the filtered image, ``depth`` 3×3
convolutions of ``width`` channels, pixel-shuffle back; in the spirit of PRN_r's recurrence, Ren et al.
CVPR 2019) sees ``scale·depth`` pixels around each pixel and adds a correction where the gate is open:
``out = f + m·r(f)``, so a photo the gate leaves alone stays as it went in. With ``refine_input="both"`` it reads
the rainy image beside the filtered one, ``r(f, x)``: what the filtering changed, and what it could not. The correction is not constrained
like the filtering (``unit_kernels``, ``channel_fusion``): where the gate is open, flat areas are returned
exactly only as far as the refinement has learnt to leave them.

>>> import torch
>>> model = RefineEfDeRain(RefineEfDeRainConfig(widths=(8, 8, 8), depth=1, gate=True, refine_width=8))
>>> model(torch.rand(1, 3, 17, 33)).shape
torch.Size([1, 3, 17, 33])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.padding import pad_to_multiple
from ..ops.shuffle import pixel_unshuffle
from .efderain import EfDeRain, EfDeRainConfig

__all__ = ["RefineEfDeRainConfig", "RefineEfDeRain", "Refinement"]


class Refinement(nn.Module):
    """Residual ``r(f)`` at ``1/scale`` resolution: unshuffle, ``depth`` × [3×3 conv (+ ReLU but the last)], shuffle.

    The last convolution starts at zero, so the refinement starts as no change.
    """

    def __init__(self, channels: int, width: int, depth: int, scale: int, inputs: int = 1) -> None:
        super().__init__()
        self.scale, self.inputs = scale, inputs
        c = channels * scale**2
        layers: list[nn.Module] = []
        for n in range(depth):
            layers.append(nn.Conv2d(c * inputs if n == 0 else width, c if n == depth - 1 else width, 3, padding=1))
            if n < depth - 1:
                layers.append(nn.ReLU(True))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        """The correction of ``f`` ``(B, C, H, W)``; ``x``: the rainy image of the same shape, read beside ``f`` by a
        refinement built with ``inputs=2`` (and only there)."""
        if (x is not None) != (self.inputs == 2):
            raise ValueError(f"a refinement of {self.inputs} image(s) was given {1 if x is None else 2}")
        padded, (h, w) = pad_to_multiple(f if x is None else torch.cat([f, x.to(f.dtype)], 1), self.scale)
        r = F.pixel_shuffle(self.body(pixel_unshuffle(padded, self.scale)), self.scale)
        return r[..., :h, :w]


@dataclass(frozen=True)
class RefineEfDeRainConfig(EfDeRainConfig):
    """:class:`~derain.models.efderain.EfDeRainConfig` plus the refinement's ``refine_width``, ``refine_depth``
    and ``refine_scale`` (its resolution is ``1/refine_scale``), and what it reads: ``refine_input`` ``"filtered"``
    (the filtered image) or ``"both"`` (the filtered and the rainy image)."""

    refine_width: int = 32
    refine_depth: int = 4
    refine_scale: int = 4
    refine_input: str = "filtered"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.refine_width < 1 or self.refine_depth < 2 or self.refine_scale < 1:
            raise ValueError("refine_width >= 1, refine_depth >= 2 and refine_scale >= 1 are needed")
        if self.refine_input not in ("filtered", "both"):
            raise ValueError(f"refine_input must be 'filtered' or 'both', got {self.refine_input!r}")


class RefineEfDeRain(EfDeRain):
    """:class:`EfDeRain` followed by a gated :class:`Refinement`."""

    def __init__(self, config: RefineEfDeRainConfig = RefineEfDeRainConfig()) -> None:
        super().__init__(config)
        inputs = 2 if config.refine_input == "both" else 1
        self.refine = Refinement(config.in_channels, config.refine_width, config.refine_depth, config.refine_scale, inputs)

    def autocast_modules(self) -> list[nn.Module]:
        return [*super().autocast_modules(), self.refine]

    @property
    def reach(self) -> int:
        """The filtering's reach plus the refinement's: ``(refine_depth + 1)·refine_scale`` pixels."""
        cfg = self.config
        return super().reach + (cfg.refine_depth + 1) * cfg.refine_scale

    def full_resolution(
        self, image: Tensor, features: tuple[Tensor, ...], out_size: tuple[int, int] | None = None, *,
        whole: Tensor | None = None, path: str | None = None, return_gate: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """:meth:`EfDeRain.full_resolution` on all of ``image``, then ``f + m·r(f)`` (or ``r(f, image)``; the refinement reads around each
        pixel, so the filtering runs on all of the image it is given; :attr:`reach` makes that enough)."""
        f, gate = super().full_resolution(image, features, None, whole=whole, path=path, return_gate=True)
        r = self.refine(f, image if self.config.refine_input == "both" else None)
        out = f + (r if gate is None else gate.to(r.dtype) * r)
        return out, gate if return_gate else None
