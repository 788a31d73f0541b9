"""Pixel-wise (dilated) filtering: every pixel and colour channel has its own k×k kernel.

Layout (as the released EfficientDeRain code): ``kernels`` has ``C·k²`` channels, channel
``c·k² + k·i + j`` holds the weight of tap ``(i, j)`` (row-major) for colour channel ``c``.
At dilation ``r`` the input is zero-padded by ``r·(k−1)/2`` and

    out[b, c, y, x] = Σ_{i,j} kernels[b, c·k² + k·i + j, y, x] · image[b, c, y + r·(i − h), x + r·(j − h)]

with ``h = (k − 1) / 2`` (paper Eq. 4).

Three implementations compute the same thing:

* ``"reference"`` builds the stack of the k² shifted views (what the released code does); obviously
  right, but it materialises a k²-fold copy of the image.
* ``"fast"`` accumulates the k² products in place into one output buffer and never builds the stack.
* ``"onehot"`` builds the same stack with one fixed convolution (k² one-hot k×k filters at the
  dilation), then multiplies and sums: a handful of large ops, the form exported to ONNX (where the
  other two become dozens of slice, multiply and add nodes).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "pixel_filter2d",
    "pixel_dilation_filter2d",
    "PixelFilter2d",
    "PixelDilationFilter2d",
    "check_filter_inputs",
]

Implementation = Literal["fast", "reference", "onehot"]


def check_filter_inputs(image: Tensor, kernels: Tensor, kernel_size: int | None = None) -> int:
    """Validate ``image`` (B, C, H, W) and ``kernels`` (B, C·k², H, W); return ``k``.

    Raises ``TypeError`` for non-tensors, non-floating or mismatched dtypes/devices and
    ``ValueError`` for wrong ranks or shapes and even or non-positive kernel sizes.
    """
    if not isinstance(image, Tensor) or not isinstance(kernels, Tensor):
        raise TypeError(
            f"image and kernels must be torch.Tensor, got {type(image).__name__} and {type(kernels).__name__}"
        )
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, C, H, W), got {tuple(image.shape)}")
    if kernels.dim() != 4:
        raise ValueError(f"kernels must have shape (B, C*k*k, H, W), got {tuple(kernels.shape)}")
    if not image.is_floating_point() or not kernels.is_floating_point():
        raise TypeError(f"image and kernels must be floating point, got {image.dtype} and {kernels.dtype}")
    if image.dtype != kernels.dtype:
        raise TypeError(f"image and kernels must have the same dtype, got {image.dtype} and {kernels.dtype}")
    if image.device != kernels.device:
        raise TypeError(f"image and kernels must be on the same device, got {image.device} and {kernels.device}")
    b, c, h, w = image.shape
    if kernels.shape[0] != b or kernels.shape[2:] != image.shape[2:]:
        raise ValueError(
            "kernels must match the image's batch and spatial size: "
            f"image {tuple(image.shape)}, kernels {tuple(kernels.shape)}"
        )
    if c == 0 or kernels.shape[1] % c:
        raise ValueError(f"kernels must have C*k*k channels for C={c}, got {kernels.shape[1]}")
    taps = kernels.shape[1] // c
    k = math.isqrt(taps)
    if k * k != taps:
        raise ValueError(f"kernels must have C*k*k channels for C={c}, got {kernels.shape[1]} ({taps} per channel)")
    if kernel_size is not None and kernel_size != k:
        raise ValueError(f"kernel_size={kernel_size} does not match kernels with {taps} taps per channel (k={k})")
    if k % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {k}")
    return k


def _check_dilation(dilation: int) -> None:
    if isinstance(dilation, bool) or not isinstance(dilation, int):
        raise TypeError(f"dilation must be an int, got {type(dilation).__name__}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")


def _filter_reference(image: Tensor, kernels: Tensor, k: int, dilation: int) -> Tensor:
    b, c, h, w = image.shape
    pad = dilation * (k - 1) // 2
    padded = F.pad(image, (pad, pad, pad, pad))
    shifted = [
        padded[:, :, i * dilation : i * dilation + h, j * dilation : j * dilation + w]
        for i in range(k)
        for j in range(k)
    ]
    stack = torch.stack(shifted, dim=2)  # (B, C, k², H, W)
    return (stack * kernels.view(b, c, k * k, h, w)).sum(dim=2)


def _filter_onehot(image: Tensor, kernels: Tensor, k: int, dilation: int) -> Tensor:
    b, c, h, w = image.shape
    onehot = torch.eye(k * k, dtype=image.dtype, device=image.device).view(k * k, 1, k, k)
    shifted = F.conv2d(image.reshape(b * c, 1, h, w), onehot, padding=dilation * (k - 1) // 2, dilation=dilation)
    return (shifted.view(b, c, k * k, h, w) * kernels.view(b, c, k * k, h, w)).sum(dim=2)


def _filter_fast(image: Tensor, kernels: Tensor, k: int, dilation: int) -> Tensor:
    """In-place accumulation over the k² taps on the valid region of each tap.

    Taps that fall outside the image (zero padding) contribute nothing, so instead of padding
    the image each tap updates only the output window where its source pixel exists.
    """
    b, c, h, w = image.shape
    taps = kernels.view(b, c, k * k, h, w)
    half = (k - 1) // 2
    centre = half * k + half
    out = taps[:, :, centre] * image
    for i in range(k):
        dy = (i - half) * dilation
        if abs(dy) >= h:
            continue
        oy0, oy1 = max(0, -dy), h - max(0, dy)  # output rows whose source row y+dy is inside
        for j in range(k):
            dx = (j - half) * dilation
            if (i == half and j == half) or abs(dx) >= w:
                continue
            ox0, ox1 = max(0, -dx), w - max(0, dx)
            out[:, :, oy0:oy1, ox0:ox1].addcmul_(
                taps[:, :, i * k + j, oy0:oy1, ox0:ox1],
                image[:, :, oy0 + dy : oy1 + dy, ox0 + dx : ox1 + dx],
            )
    return out


_IMPLEMENTATIONS = {"fast": _filter_fast, "reference": _filter_reference, "onehot": _filter_onehot}


def _implementation(name: str):  # noqa: ANN202 - one of the functions above
    if name not in _IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {sorted(_IMPLEMENTATIONS)}, got {name!r}")
    return _IMPLEMENTATIONS[name]


def pixel_filter2d(
    image: Tensor,
    kernels: Tensor,
    dilation: int = 1,
    implementation: Implementation = "fast",
) -> Tensor:
    r"""Filter every pixel of ``image`` with its own kernel, at a given dilation.

    Args:
        image: ``(B, C, H, W)`` floating-point tensor.
        kernels: ``(B, C·k², H, W)`` per-pixel kernels (``k`` odd), channel ``c·k² + k·i + j``.
        dilation: spacing between kernel taps (``>= 1``); zero padding outside the image.
        implementation: ``"fast"`` (in-place accumulation), ``"reference"`` (stacked shifts) or
            ``"onehot"`` (stacked by a one-hot convolution).

    Returns:
        ``(B, C, H, W)`` filtered image.

    Example:
        >>> image = torch.arange(9.0).view(1, 1, 3, 3)
        >>> kernels = torch.zeros(1, 9, 3, 3)
        >>> kernels[:, 4] = 1.0  # centre tap only: identity
        >>> torch.equal(pixel_filter2d(image, kernels), image)
        True
        >>> kernels = torch.zeros(1, 9, 3, 3)
        >>> kernels[:, 5] = 1.0  # right neighbour, zero beyond the border
        >>> pixel_filter2d(image, kernels)[0, 0]
        tensor([[1., 2., 0.],
                [4., 5., 0.],
                [7., 8., 0.]])
    """
    k = check_filter_inputs(image, kernels)
    _check_dilation(dilation)
    return _implementation(implementation)(image, kernels, k, dilation)


def pixel_dilation_filter2d(
    image: Tensor,
    kernels: Tensor,
    dilations: Sequence[int] = (1, 2, 3, 4),
    implementation: Implementation = "fast",
) -> Tensor:
    """Apply the same per-pixel kernels at several dilations; concatenate along channels.

    Returns ``(B, len(dilations)·C, H, W)``: the results for ``dilations`` in order, as the
    input of EfDeRain's fusion convolution.

    Example:
        >>> image = torch.rand(2, 3, 8, 8)
        >>> kernels = torch.rand(2, 27, 8, 8)
        >>> pixel_dilation_filter2d(image, kernels).shape
        torch.Size([2, 12, 8, 8])
    """
    if len(dilations) == 0:
        raise ValueError("dilations must not be empty")
    k = check_filter_inputs(image, kernels)
    for d in dilations:
        _check_dilation(d)
    impl = _implementation(implementation)
    return torch.cat([impl(image, kernels, k, d) for d in dilations], dim=1)


class PixelFilter2d(nn.Module):
    """Module twin of :func:`pixel_filter2d`.

    Example:
        >>> op = PixelFilter2d(dilation=2)
        >>> op(torch.rand(1, 3, 5, 5), torch.rand(1, 27, 5, 5)).shape
        torch.Size([1, 3, 5, 5])
    """

    def __init__(self, dilation: int = 1, implementation: Implementation = "fast") -> None:
        super().__init__()
        _check_dilation(dilation)
        self.dilation = dilation
        self.implementation: Implementation = implementation

    def forward(self, image: Tensor, kernels: Tensor) -> Tensor:
        return pixel_filter2d(image, kernels, self.dilation, self.implementation)

    def extra_repr(self) -> str:
        return f"dilation={self.dilation}, implementation={self.implementation!r}"


class PixelDilationFilter2d(nn.Module):
    """Module twin of :func:`pixel_dilation_filter2d`.

    Example:
        >>> op = PixelDilationFilter2d((1, 2))
        >>> op(torch.rand(1, 3, 5, 5), torch.rand(1, 27, 5, 5)).shape
        torch.Size([1, 6, 5, 5])
    """

    def __init__(self, dilations: Sequence[int] = (1, 2, 3, 4), implementation: Implementation = "fast") -> None:
        super().__init__()
        if len(dilations) == 0:
            raise ValueError("dilations must not be empty")
        for d in dilations:
            _check_dilation(d)
        self.dilations = tuple(dilations)
        self.implementation: Implementation = implementation

    def forward(self, image: Tensor, kernels: Tensor) -> Tensor:
        return pixel_dilation_filter2d(image, kernels, self.dilations, self.implementation)

    def extra_repr(self) -> str:
        return f"dilations={self.dilations}, implementation={self.implementation!r}"
