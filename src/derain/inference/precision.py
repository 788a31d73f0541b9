"""Numeric precision for inference: fp32, or bf16/fp16 autocast where the hardware runs it fast.

``auto`` picks bf16 autocast (channels_last weights, :func:`prepare_model`) on CPUs with native bf16
instructions that oneDNN may use (AVX-512-BF16 or AMX-BF16, and no ``ONEDNN_MAX_CPU_ISA`` below them),
fp16 autocast on CUDA, fp32 otherwise: without those instructions oneDNN emulates bf16, slower than
fp32 (BENCHMARKS.md "Precision by CPU").
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Literal

import torch
from torch import nn

from ..errors import InvalidArgument
from ..models.interface import is_staged

__all__ = ["Precision", "PRECISIONS", "resolve_precision", "autocast", "prepare_model", "input_layout", "cpu_has_fast_bf16"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# oneDNN's instruction-set levels in order (its ONEDNN_MAX_CPU_ISA values); bf16 runs natively from
# AVX512_CORE_BF16 (AVX-512-BF16) and AVX512_CORE_AMX (AMX-BF16) on
_ONEDNN_ISAS = (
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16",
    "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "ALL",
)  # fmt: skip
# older names of the same levels
_ONEDNN_ALIASES = {"AVX512_CORE_FP16": "AVX10_1_512", "AVX512_CORE_AMX": "AVX10_1_512_AMX",
                   "AVX512_CORE_AMX_FP16": "AVX10_1_512_AMX_FP16", "DEFAULT": "ALL"}


def _onednn_allows(level: str) -> bool:
    """True unless ``ONEDNN_MAX_CPU_ISA`` (or its older name ``DNNL_MAX_CPU_ISA``) caps oneDNN below ``level``."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").strip().upper()
    cap, level = _ONEDNN_ALIASES.get(cap, cap), _ONEDNN_ALIASES.get(level, level)
    if cap not in _ONEDNN_ISAS:
        return True  # a value oneDNN does not know: it ignores it
    return _ONEDNN_ISAS.index(cap) >= _ONEDNN_ISAS.index(level)


def _cpu_flag(name: str) -> bool:
    try:
        return bool(getattr(torch.cpu, name)())
    except (AttributeError, RuntimeError):  # a PyTorch without the query
        return False


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 natively on this CPU: AVX-512-BF16 or AMX-BF16, not capped below them.

    AVX-512 without BF16 (or AVX2) emulates bf16 through fp32, slower than fp32 itself.
    """
    return (_cpu_flag("_is_avx512_bf16_supported") and _onednn_allows("AVX512_CORE_BF16")) or (
        _cpu_flag("_is_amx_tile_supported") and _onednn_allows("AVX512_CORE_AMX")
    )


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """Turn ``auto`` into a concrete precision for ``device``; validate the others."""
    if precision not in PRECISIONS:
        raise InvalidArgument(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", option="--precision")
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return "fp16"
        return "bf16" if kind == "cpu" and cpu_has_fast_bf16() else "fp32"
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: str | torch.device = "cpu") -> Iterator[None]:
    """Autocast context for a concrete precision (no-op for fp32)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=_DTYPES[precision]):
        yield


def input_layout(x: torch.Tensor, model: nn.Module, precision: str) -> torch.Tensor:
    """``x`` in the memory layout ``model`` takes fastest under ``precision`` (a model :func:`prepare_model` prepared).

    Reduced precision: channels_last, the layout of the prepared weights, unless the model declares
    ``channels_last_input = False`` (:mod:`derain.models.interface`: its first operations are faster on the plain
    layout; its first convolution switches to channels_last with the same results). fp32: ``x`` as it is.
    """
    if precision == "fp32" or (is_staged(model) and not model.channels_last_input):
        return x
    return x.contiguous(memory_format=torch.channels_last)


def prepare_model(model: nn.Module, precision: str, device: str | torch.device = "cpu") -> nn.Module:
    """Move ``model`` (in place) to ``device`` in eval mode, for inference under :func:`autocast`.

    Reduced precision: channels_last memory format, and the weights of the layers a staged model
    (:mod:`derain.models.interface`) lists in ``autocast_modules()`` stored in the compute dtype, which autocast would
    otherwise cast them to at every call (faster; the same bf16 products, though oneDNN may sum a few in
    another order on CPUs without AMX: tests/test_io.py states the tolerance). Such a model then runs only
    under :func:`autocast` of that precision.
    """
    model = model.to(device).eval()
    if precision != "fp32":
        model = model.to(memory_format=torch.channels_last)
        for layer in model.autocast_modules() if is_staged(model) else ():
            layer.to(_DTYPES[precision])
    return model
