"""Fused inference kernel of the full-resolution stage (C extension ``_fused_filter``).

A kernel-prediction network (EfDeRain) predicts its per-pixel kernels at ``1/scale`` resolution; the eager path then upsamples them
(``C·k²`` full-resolution channels), filters the image at every dilation (``N·C`` channels) and fuses
the results with a 3×3 convolution, and a gated model blends the result with the image
(``image + m·(y − image)``, the gate ``m`` upsampled like the kernels). All are memory-bound at full
resolution. The fused kernel does them in one pass, row by row, keeping one row of kernels and three
rows of filtered maps in cache: same function, fp32, no gradient.

The extension is built by ``pip install`` where a C compiler exists; :func:`fused_filter_available`
says whether it is, and :func:`~derain.ops.full_resolution.dilation_filter_fuse` runs the eager path
where it is not (or where a gradient is needed).
"""

from __future__ import annotations

import ctypes
import os
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # built by setup.py; optional
    from . import _fused_filter
except ImportError:  # pragma: no cover - depends on the build
    _fused_filter = None


def _torch_openmp() -> tuple[int, int, int] | None:
    """Addresses of ``GOMP_parallel``, ``omp_get_thread_num``, ``omp_get_num_threads`` in PyTorch's OpenMP runtime.

    The kernel runs its rows on the same thread team as PyTorch's operators (whose threads keep
    spinning for a while after each operator: fresh threads would compete with them for the cores).
    Found among the libraries this process has loaded (Linux); ``None`` elsewhere, and the kernel
    starts threads of its own.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libgomp" in line or "/libomp" in line or "/libiomp" in line}
        for path in sorted(paths):
            lib = ctypes.CDLL(path)  # already loaded: the same handle
            names = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
            if all(hasattr(lib, n) for n in names):
                return tuple(ctypes.cast(getattr(lib, n), ctypes.c_void_p).value for n in names)  # type: ignore[return-value]
    except OSError:
        pass
    return None


# PyTorch's kernel capability (``ATEN_CPU_CAPABILITY`` caps it) -> the best clone that goes with it
_CAPABILITY_CLONES = {"AVX512": ("avx512", "avx2", "default"), "AVX2": ("avx2", "default")}


def _auto_isa(supported: Sequence[str]) -> str:
    """The best clone that this CPU runs and PyTorch's capability allows (so ``ATEN_CPU_CAPABILITY=avx2``
    makes the kernel take the AVX2 path too)."""
    allowed = _CAPABILITY_CLONES.get(torch.backends.cpu.get_cpu_capability(), ("default",))
    return next((name for name in supported if name in allowed), supported[-1])


__all__ = [
    "fused_filter_available",
    "fused_filter_supports",
    "fused_filter_isas",
    "fused_filter_isa",
    "set_fused_filter_isa",
    "upsample_filter_fuse",
    "ISA_ENV",
]

ISA_ENV = "DERAIN_FUSED_ISA"
"""Environment variable naming the kernel's instruction-set clone (``avx512``, ``avx2``, ``default``),
read at import; unset, the best one this CPU and PyTorch's capability allow."""


def fused_filter_isas() -> tuple[str, ...]:
    """The instruction-set clones of the fused kernel this CPU runs, best first (empty without the extension).

    The kernel is compiled once per instruction set: ``avx512`` (x86-64-v4), ``avx2`` (x86-64-v3) and
    ``default`` (the compiler's baseline; the only one off x86-64 or without GCC). Each gives the same
    function; float sums may round differently between them.
    """
    return tuple(_fused_filter.isas()) if _fused_filter is not None else ()


def fused_filter_isa() -> str | None:
    """The clone :func:`upsample_filter_fuse` runs (None without the extension)."""
    return _fused_filter.isa() if _fused_filter is not None else None


def set_fused_filter_isa(name: str) -> None:
    """Run the clone ``name`` from now on (process-wide; tests use it to cover every clone).

    Raises:
        ValueError: ``name`` is not one of :func:`fused_filter_isas` (unknown, or this CPU lacks it).
        RuntimeError: the extension is not built.
    """
    if _fused_filter is None:
        raise RuntimeError("derain.ops._fused_filter is not built (no C compiler at install time)")
    if name not in fused_filter_isas():
        raise ValueError(f"the fused kernel's clones on this CPU are {', '.join(fused_filter_isas())}; got {name!r}")
    _fused_filter.set_isa(name)


if _fused_filter is not None:
    _openmp = _torch_openmp()
    if _openmp is not None:
        _fused_filter.set_openmp(*_openmp)
    _requested = os.environ.get(ISA_ENV, "").strip().lower()
    if _requested and _requested not in fused_filter_isas():
        warnings.warn(
            f"{ISA_ENV}={_requested} ignored: the fused kernel's clones on this CPU are {', '.join(fused_filter_isas())}",
            RuntimeWarning,
            stacklevel=2,
        )
        _requested = ""
    set_fused_filter_isa(_requested or _auto_isa(fused_filter_isas()))


def fused_filter_available() -> bool:
    """True where the C extension is built (then CPU inference uses it)."""
    return _fused_filter is not None


def fused_filter_supports(channels: int, dilations: int) -> bool:
    """True where the extension is built and handles images of ``channels`` with ``dilations`` dilations."""
    return (
        _fused_filter is not None
        and 1 <= channels <= _fused_filter.MAX_CHANNELS
        and 1 <= dilations <= _fused_filter.MAX_DILATIONS
    )


def upsample_filter_fuse(
    image: Tensor,
    low_kernels: Tensor,
    scale: int,
    dilations: Sequence[int],
    weight: Tensor,
    bias: Tensor,
    out_size: tuple[int, int] | None = None,
    threads: int | None = None,
    gate: Tensor | None = None,
    whole: Tensor | None = None,
) -> Tensor:
    """Bilinear ×``scale`` upsampling of ``low_kernels``, pixel-wise dilation filtering of ``image``, 3×3 fusion,
    and optionally the rain gate.

    Equal (up to float rounding) to ``y = conv2d(pixel_dilation_filter2d(image, up(low_kernels)), weight,
    bias, padding=1)`` cropped to ``out_size``, where ``up`` is ``interpolate(scale_factor=scale,
    mode="bilinear", align_corners=False)`` cropped to the image's size; with ``gate`` (logits), to
    ``image + m·(y − image)`` with ``m = sigmoid(up(gate)) · whole`` (``whole`` one factor per image, 1
    without it): the gate blended in the same pass.

    Args:
        image: ``(B, C, H, W)`` CPU tensor (computed in fp32).
        low_kernels: ``(B, C·k², h, w)`` kernels with ``h·scale >= H`` and ``w·scale >= W``; read as they are
            when fp32 and contiguous or channels_last (what reduced-precision inference makes: no transposing copy).
        scale: integer upsampling factor (1 = kernels already at full resolution).
        dilations: dilations, in the order of the fusion's input channel groups.
        weight: fusion weight ``(C, len(dilations)·C, 3, 3)``; ``bias``: ``(C,)``.
        out_size: ``(Ho, Wo)`` top-left part of the result to return (default: the image's size).
        threads: worker threads (default: ``torch.get_num_threads()``).
        gate: ``(B, 1, h, w)`` the gate's logits at the kernels' resolution, or None (no gate).
        whole: ``(B,)`` each image's factor on the gate (with ``gate`` only), or None.

    Returns:
        ``(B, C, Ho, Wo)`` fp32 tensor.

    Example:
        >>> image = torch.rand(1, 3, 9, 10)
        >>> low = torch.zeros(1, 27, 5, 5)
        >>> low[:, 4::9] = 1.0  # centre taps: every dilation returns the image
        >>> weight = torch.zeros(3, 12, 3, 3)
        >>> for c in range(3):
        ...     weight[c, c, 1, 1] = 1.0  # fusion keeps dilation 1's result
        >>> out = upsample_filter_fuse(image, low, 2, (1, 2, 3, 4), weight, torch.zeros(3))
        >>> torch.allclose(out, image)
        True
    """
    if _fused_filter is None:
        raise RuntimeError("derain.ops._fused_filter is not built (no C compiler at install time)")
    if image.dim() != 4 or low_kernels.dim() != 4:
        raise ValueError(f"image and low_kernels must be 4-D, got {tuple(image.shape)} and {tuple(low_kernels.shape)}")
    if image.device.type != "cpu" or low_kernels.device.type != "cpu":
        raise ValueError("upsample_filter_fuse runs on the CPU")
    b, c, h, w = image.shape
    taps = low_kernels.shape[1] // c if c else 0
    k = int(round(taps**0.5))
    if low_kernels.shape[0] != b or taps * c != low_kernels.shape[1] or k * k != taps or k % 2 == 0:
        raise ValueError(f"low_kernels must be (B, C*k*k, h, w) with odd k for image {tuple(image.shape)}, got {tuple(low_kernels.shape)}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    hl, wl = low_kernels.shape[-2:]
    if hl * scale < h or wl * scale < w:
        raise ValueError(f"low_kernels {tuple(low_kernels.shape)} upsampled x{scale} do not cover the image {h}x{w}")
    dilations = tuple(int(d) for d in dilations)
    if not dilations or min(dilations) < 1:
        raise ValueError(f"dilations must be non-empty and >= 1, got {dilations}")
    n = len(dilations)
    if not fused_filter_supports(c, n):
        raise ValueError(
            f"the fused kernel handles 1-{_fused_filter.MAX_CHANNELS} channels and 1-{_fused_filter.MAX_DILATIONS} "
            f"dilations, got {c} and {n}"
        )
    if tuple(weight.shape) != (c, n * c, 3, 3) or tuple(bias.shape) != (c,):
        raise ValueError(f"fusion must be ({c}, {n * c}, 3, 3) + ({c},), got {tuple(weight.shape)} + {tuple(bias.shape)}")
    ho, wo = out_size if out_size is not None else (h, w)
    if not (0 < ho <= h and 0 < wo <= w):
        raise ValueError(f"out_size {out_size} must be within the image's {h}x{w}")
    if any(t is not None and t.device.type != "cpu" for t in (gate, whole)):
        raise ValueError("upsample_filter_fuse runs on the CPU")
    if gate is not None and tuple(gate.shape) != (b, 1, hl, wl):
        raise ValueError(f"gate must be ({b}, 1, {hl}, {wl}) like the kernels, got {tuple(gate.shape)}")
    if whole is not None and (gate is None or tuple(whole.reshape(-1).shape) != (b,)):
        raise ValueError(f"whole needs gate and one value per image ({b}), got {tuple(whole.shape)}")
    # zero columns stand for the taps outside the image (the kernel reads whole blocks past the right edge)
    reach = max(dilations) * (k // 2)
    image = F.pad(image.detach().to(torch.float32), (reach, reach + _fused_filter.BLOCK))
    low = low_kernels.detach().to(torch.float32)
    nhwc = not low.is_contiguous() and low.is_contiguous(memory_format=torch.channels_last)
    image, weight, bias = (t.detach().to(torch.float32).contiguous() for t in (image, weight, bias))
    tensors = (image, low if nhwc else low.contiguous(), weight, bias)  # channels_last read as it is
    extra = [None if t is None else t.detach().to(torch.float32).contiguous() for t in (gate, whole)]
    out = torch.empty(b, c, ho, wo, dtype=torch.float32)
    _fused_filter.filter_fuse(
        *(t.data_ptr() for t in tensors), out.data_ptr(),
        b, c, h, w, reach, hl, wl, k, ho, wo, int(scale), dilations,
        int(threads or torch.get_num_threads()), *(0 if t is None else t.data_ptr() for t in extra), nhwc,
    )  # fmt: skip
    return out
