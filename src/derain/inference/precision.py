"""Numeric precision for inference: fp32, or bf16/fp16 autocast where the hardware runs it fast.

``auto`` picks bf16 autocast (channels_last weights, :func:`prepare_model`) on CPUs whose oneDNN has
native bf16 (AVX-512-BF16 or AMX), fp16 autocast on CUDA, fp32 otherwise.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import torch
from torch import nn

__all__ = ["Precision", "PRECISIONS", "resolve_precision", "autocast", "prepare_model", "input_layout", "cpu_has_fast_bf16"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 natively on this CPU (AVX-512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """Turn ``auto`` into a concrete precision for ``device``; validate the others."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
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

    Reduced precision: channels_last, the layout of the prepared weights, unless the model's class says
    ``channels_last_input = False`` (its first operations are faster on the plain layout; its first
    convolution switches to channels_last with the same results). fp32: ``x`` as it is.
    """
    if precision == "fp32" or not getattr(model, "channels_last_input", True):
        return x
    return x.contiguous(memory_format=torch.channels_last)


def prepare_model(model: nn.Module, precision: str, device: str | torch.device = "cpu") -> nn.Module:
    """Move ``model`` (in place) to ``device`` in eval mode, for inference under :func:`autocast`.

    Reduced precision: channels_last memory format, and the weights of the layers the model lists in
    ``autocast_modules()`` (if it has that method) stored in the compute dtype, which autocast would
    otherwise cast them to at every call (the same results, faster). Such a model then runs only under
    :func:`autocast` of that precision.
    """
    model = model.to(device).eval()
    if precision != "fp32":
        model = model.to(memory_format=torch.channels_last)
        for layer in getattr(model, "autocast_modules", list)():
            layer.to(_DTYPES[precision])
    return model
