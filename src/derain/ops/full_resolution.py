"""The full-resolution stage of a kernel-prediction network, as one op: kernels predicted at low resolution
are upsampled, the image is filtered with them at every dilation, a 3×3 convolution fuses the results, and
a rain gate (optional) blends them with the image.

:func:`dilation_filter_fuse` picks how it runs (the same function each way, up to float rounding):

* ``auto``: the fused C kernel (:mod:`derain.ops.fused_filter`) where it can run (built, CPU, fp32, a
  fusion, no gradient to compute, not tracing or compiling), else ``fast``;
* ``fast``: eager upsampling, in-place accumulating filtering (:mod:`derain.ops.pixel_filter`), fusion;
* ``reference``: as ``fast``, the filtering as the released code computes it (stacked shifted copies);
* ``onehot``: as ``fast``, the shifted copies from one one-hot convolution (a few large ops: what an ONNX
  export traces).

A network (:class:`~derain.models.efderain.EfDeRain`, or any other) predicts the kernels, the fusion's
weights and the gate and calls this op; how it runs is decided here, not in the network.

>>> image = torch.rand(1, 3, 9, 10)
>>> low = torch.zeros(1, 27, 5, 5)
>>> low[:, 4::9] = 1.0  # centre taps: every dilation returns the image
>>> weight = torch.zeros(3, 12, 3, 3)
>>> for c in range(3):
...     weight[c, c, 1, 1] = 1.0  # the fusion keeps dilation 1's result
>>> out, _ = dilation_filter_fuse(image, low, 2, (1, 2, 3, 4), weight, torch.zeros(3), path="fast")
>>> torch.allclose(out, image)
True
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .fused_filter import fused_filter_supports, upsample_filter_fuse
from .pixel_filter import pixel_dilation_filter2d

__all__ = ["FILTER_PATHS", "bilinear_up", "dilation_filter_fuse", "filtering_layout", "fused_path_applies", "gate_map"]

FILTER_PATHS: tuple[str, ...] = ("auto", "fast", "reference", "onehot")


def filtering_layout(t: Tensor) -> Tensor:
    """Half-precision kernels as fp32, in plain (NCHW-contiguous) layout.

    The filtering is memory-bound elementwise work over row slices: on the CPU it is much faster in fp32
    on contiguous tensors than in bf16 on channels_last ones (the layout reduced-precision inference uses
    for the convolutions), and fp32 accumulation is more accurate.
    """
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.contiguous()


def bilinear_up(t: Tensor, scale: int, size: tuple[int, int] | None = None) -> Tensor:
    """Bilinear ×``scale`` (``align_corners=False``); with ``size``, only its top-left ``size`` (same values).

    >>> t = torch.rand(1, 2, 5, 6)
    >>> torch.equal(bilinear_up(t, 4, (9, 13)), bilinear_up(t, 4)[..., :9, :13])
    True
    """
    if scale == 1:
        return t if size is None or tuple(size) == tuple(t.shape[-2:]) else t[..., : size[0], : size[1]]
    if size is None or tuple(size) == (t.shape[-2] * scale, t.shape[-1] * scale):
        return F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=False)
    # Output row i reads input rows floor((i + 0.5) / scale - 0.5) and the next one, so h // scale + 2 rows
    # suffice; passing the scale keeps the sampling positions of the full upsampling.
    h, w = size
    low = t[..., : min(t.shape[-2], h // scale + 2), : min(t.shape[-1], w // scale + 2)]
    return torch.ops.aten.upsample_bilinear2d.default(low, [h, w], False, float(scale), float(scale))


def fused_path_applies(image: Tensor, dilations: Sequence[int], weight: Tensor | None, *tensors: Tensor | None) -> bool:
    """Whether ``auto`` runs the fused C kernel: it is built and handles the image's channels and the dilations,
    on the CPU, with a fusion whose weights are fp32, an fp32 image, not while tracing or compiling, and no
    gradient to compute for the image, the fusion or ``tensors`` (the kernel has no backward)."""
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (image, weight, *tensors))
    return (
        weight is not None
        and fused_filter_supports(image.shape[1], len(dilations))
        and image.device.type == "cpu"
        and image.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not needs_grad
    )


def dilation_filter_fuse(
    image: Tensor,
    low_kernels: Tensor,
    scale: int,
    dilations: Sequence[int],
    weight: Tensor | None,
    bias: Tensor | None,
    out_size: tuple[int, int] | None = None,
    *,
    gate: Tensor | None = None,
    whole: Tensor | None = None,
    fusion_fp32: bool = True,
    path: str = "auto",
    return_gate: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The full-resolution stage: ``(output, gate map or None)``.

    Args:
        image: ``(B, C, H, W)`` the image the kernels filter (what the network saw, top-left part).
        low_kernels: ``(B, C·k², h, w)`` per-pixel kernels at ``1/scale`` resolution (``scale=1``: already at
            full resolution), channel ``c·k² + tap``.
        scale: integer upsampling factor of the kernels (and the gate).
        dilations: dilations of the filtering, in the order of the fusion's input channel groups.
        weight, bias: the 3×3 fusion ``(C, N·C, 3, 3)`` and ``(C,)``; ``weight=None``: no fusion (one dilation's
            filtering is the output).
        out_size: the top-left ``(Ho, Wo)`` of the result that is needed (default: the image's size); the eager
            paths compute at least that much and may return more (the image's size), the fused kernel exactly it.
        gate: ``(B, 1, h, w)`` the rain gate's logits at the kernels' resolution, or None (no gate).
        whole: ``(B, 1)`` each image's factor on the gate (with ``gate`` only), or None.
        fusion_fp32: the eager fusion in fp32 whatever the autocast (else as autocast runs a convolution); the
            fused kernel computes in fp32 either way.
        path: see the module docstring.
        return_gate: also return the gate map ``m`` (``sigmoid(up(gate)) · whole``) at the output's size.

    The output is ``y`` (the fused filtering) or, with ``gate``, ``image + m·(y − image)``.
    """
    if path not in FILTER_PATHS:
        raise ValueError(f"path must be one of {', '.join(FILTER_PATHS)}, got {path!r}")
    h, w = image.shape[-2:]
    out_size = (h, w) if out_size is None else out_size
    if path == "auto" and fused_path_applies(image, dilations, weight, low_kernels, bias, gate, whole):  # fp32 fusion
        out = upsample_filter_fuse(image, low_kernels.float(), scale, dilations, weight, bias, out_size, gate=gate, whole=whole)
        return out, gate_map(gate, whole, scale, out_size) if gate is not None and return_gate else None
    kernels = filtering_layout(bilinear_up(filtering_layout(low_kernels), scale, (h, w)))  # converted at low resolution
    impl = path if path in ("reference", "onehot") else "fast"
    filtered = pixel_dilation_filter2d(image.to(kernels.dtype).contiguous(), kernels, tuple(dilations), impl)
    if weight is None:
        out = filtered
    elif fusion_fp32:
        with torch.autocast(filtered.device.type, enabled=False):
            out = F.conv2d(filtered.float(), weight.float(), None if bias is None else bias.float(), padding=1)
    else:
        out = F.conv2d(filtered, weight, bias, padding=1)
    if gate is None:
        return out, None
    m = gate_map(gate, whole, scale, tuple(out.shape[-2:]))
    image = image[..., : out.shape[-2], : out.shape[-1]].to(out.dtype)
    return image + m * (out - image), m


def gate_map(gate: Tensor, whole: Tensor | None, scale: int, size: tuple[int, int] | None = None) -> Tensor:
    """The rain gate ``(B, 1, H, W)`` in (0, 1): ``sigmoid`` of the logits upsampled like the kernels (``size`` as
    in :func:`bilinear_up`), times each image's factor ``whole`` ``(B, 1)`` where given."""
    m = torch.sigmoid(bilinear_up(gate, scale, size))
    return m if whole is None else m * whole[:, :, None, None]
